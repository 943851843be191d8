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

    An active global API key or an active staff user sees every tenant; a tenant API key sees its
    tenant and its descendants; any other active signed-in user sees the tenants of their
    memberships and their descendants; anything else sees no tenant (an empty list).
    """
    # Imported here because the models use TenantScopedQuerySet from this module.
    from tenants.models import ApiKey, TenantMembership
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
    if not getattr(principal, "is_authenticated", False) or not getattr(principal, "is_active", False):
        return []
    if getattr(principal, "is_staff", False):
        return None
    user_id = getattr(principal, "pk", None)
    if not isinstance(user_id, int):
        # Not a user row (e.g. the API's key user): memberships cannot name it.
        return []
    # Cached on the user object, which lives for one request: every read of a page asks this.
    cached = getattr(principal, "_visible_tenant_ids", None)
    if cached is None:
        member_of = TenantMembership.objects.filter(user_id=user_id)
        cached = tenant_descendant_ids(*member_of.values_list("tenant_id", flat=True))
        principal._visible_tenant_ids = cached
    return cached


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
