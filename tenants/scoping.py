"""The one place that decides which tenants a caller may see.

Every endpoint and page scopes its queryset through `TenantScopedQuerySet.visible_to` (or
`Tenant.objects.visible_to`), which builds its filter here. The rule fails closed: a caller that is
not recognised sees nothing.
"""

from django.db import models
from django.db.models import Q

_NOTHING = Q(pk__in=[])


def visible_tenant_ids(principal) -> list[int] | None:
    """Tenant ids the principal may see, or None for "every tenant".

    An active global API key or a staff user sees every tenant; a tenant API key sees its tenant
    and its descendants; anything else sees no tenant (an empty list).
    """
    # Imported here because the models use TenantScopedQuerySet from this module.
    from tenants.models import ApiKey
    from tenants.selectors import tenant_descendant_ids

    if isinstance(principal, ApiKey):
        if not principal.is_active:
            return []
        if principal.tenant_id is None:
            return None
        cached = getattr(principal, "_visible_tenant_ids", None)
        if cached is None:
            cached = tenant_descendant_ids(principal.tenant_id)
            principal._visible_tenant_ids = cached
        return cached
    if getattr(principal, "is_authenticated", False) and getattr(principal, "is_staff", False):
        return None
    return []


def tenant_filter(principal, *, field: str = "tenant_id") -> Q:
    """A Q object restricting `field` (a tenant id) to what the principal may see."""
    ids = visible_tenant_ids(principal)
    if ids is None:
        return Q()
    if not ids:
        return _NOTHING
    return Q(**{f"{field}__in": ids})


class TenantScopedQuerySet(models.QuerySet):
    """A queryset of rows that belong to a tenant through `tenant_field`."""

    tenant_field = "tenant_id"

    def visible_to(self, principal) -> "TenantScopedQuerySet":
        return self.filter(tenant_filter(principal, field=self.tenant_field))
