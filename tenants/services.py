"""Writes for tenants and API keys."""

import hashlib
import secrets
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import router, transaction
from django.db.models.deletion import Collector

from audit.services import Actor, audit_record, audit_snapshot, audited_delete, audited_save
from tenants.models import ApiKey, Tenant, TenantMembership
from tenants.selectors import tenant_descendant_ids

API_KEY_PREFIX = "cbk_"
_PUBLIC_ID_LENGTH = 12


def api_key_hash(secret: str) -> str:
    """SHA-256 of the whole key. Keys carry 256 random bits, so a slow KDF adds nothing."""
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_split(raw_key: str) -> tuple[str, str] | None:
    """The visible prefix of a presented key, and the key itself; None when it is not one of ours."""
    if not raw_key.startswith(API_KEY_PREFIX):
        return None
    prefix = raw_key[: len(API_KEY_PREFIX) + _PUBLIC_ID_LENGTH]
    if len(raw_key) <= len(prefix) + 1 or raw_key[len(prefix)] != "_":
        return None
    return prefix, raw_key


# What the audit log keeps of a key: never its hash.
_API_KEY_AUDIT_FIELDS = ("name", "prefix", "tenant", "scopes", "is_active")


def _api_key_snapshot(api_key: ApiKey) -> dict:
    return audit_snapshot(api_key, fields=_API_KEY_AUDIT_FIELDS)


@transaction.atomic
def api_key_create(
    *, name: str, scopes: Iterable[str], tenant: Tenant | None = None, actor: Actor = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored and cannot be shown again.

    Audited as `api_key.create` by `actor` (a user, an API key, or None for the system)."""
    scopes = sorted(set(scopes))
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown or not scopes:
        raise ValidationError(
            f"Scopes must be a non-empty subset of {', '.join(ApiKey.Scope.values)}; got {', '.join(scopes)}.",
            code="invalid_scopes",
        )
    public_id = secrets.token_hex(_PUBLIC_ID_LENGTH // 2)
    prefix = f"{API_KEY_PREFIX}{public_id}"
    secret = f"{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        name=name, prefix=prefix, secret_hash=api_key_hash(secret), tenant=tenant, scopes=scopes
    )
    audit_record(
        actor=actor,
        action="api_key.create",
        instance=api_key,
        tenant_id=api_key.tenant_id,
        before=None,
        after=_api_key_snapshot(api_key),
    )
    return api_key, secret


def api_key_touch(*, api_key: ApiKey, now: datetime) -> None:
    """Record that the key was used, at most once a minute so that authentication stays read-only."""
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: Actor = None) -> None:
    """Deactivate a key for good (audited as `api_key.revoke`); revoking a revoked key does nothing."""
    current = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    api_key.is_active = False
    if not current.is_active:
        return
    before = _api_key_snapshot(current)
    current.is_active = False
    current.save(update_fields=["is_active"])
    audit_record(
        actor=actor,
        action="api_key.revoke",
        instance=current,
        tenant_id=current.tenant_id,
        before=before,
        after=_api_key_snapshot(current),
    )


@transaction.atomic
def api_key_rename(*, api_key: ApiKey, name: str, actor: Actor = None) -> ApiKey:
    """Change a key's label (audited as `api_key.update`); its scopes and tenant never change."""
    current = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    api_key.name = name
    if current.name == name:
        return api_key
    before = _api_key_snapshot(current)
    current.name = name
    current.full_clean()
    current.save(update_fields=["name"])
    audit_record(
        actor=actor,
        action="api_key.update",
        instance=current,
        tenant_id=current.tenant_id,
        before=before,
        after=_api_key_snapshot(current),
    )
    return api_key


def tenant_check_parent(tenant: Tenant, parent: Tenant | None) -> None:
    """Refuse a parent that is the tenant itself or below it (a loop)."""
    if parent is None or tenant.pk is None:
        return
    if parent.pk in tenant_descendant_ids(tenant.pk):
        raise ValidationError(
            f"{parent.slug} is {tenant.slug} itself or below it; a tenant tree cannot loop.",
            code="tenant_cycle",
        )


def tenant_save(*, tenant: Tenant, actor: Actor = None) -> Tenant:
    """Validate and save a new or changed tenant (the admin and the seed both come through here).

    Audited as `tenant.create` / `tenant.update`, as an event of the tenant itself: its markup,
    parent and billing details decide what its statements charge."""

    def write() -> None:
        tenant_check_parent(tenant, tenant.parent)
        tenant.full_clean()
        tenant.save()

    return audited_save(
        instance=tenant, action="tenant", actor=actor, tenant_id=lambda saved: saved.pk, write=write
    )


def tenant_create(
    *, slug: str, name: str, parent: Tenant | None = None, actor: Actor = None, **fields
) -> Tenant:
    """A new tenant, through tenant_save (validated and audited)."""
    return tenant_save(tenant=Tenant(slug=slug, name=name, parent=parent, **fields), actor=actor)


@transaction.atomic
def tenant_delete(*, tenant: Tenant, actor: Actor = None) -> None:
    """Delete a tenant without usage (PROTECT refuses one with usage), audited as `tenant.delete`
    with how many of each kind of object go with it (its budgets, keys, overrides, memberships,
    child tenants...). The event is global: the tenant's own events lose their tenant with it."""
    collector = Collector(using=router.db_for_write(Tenant))
    collector.collect([tenant])  # what the delete will take along (ProtectedError: usage)
    taken: Counter[str] = Counter()
    for model, instances in collector.data.items():
        taken[model._meta.label_lower] += len(instances)
    for queryset in collector.fast_deletes:
        taken[queryset.model._meta.label_lower] += queryset.count()
    taken["tenants.tenant"] -= 1  # the tenant itself
    deleted_with_it = {label: count for label, count in sorted(taken.items()) if count}
    audited_delete(
        instance=tenant,
        action="tenant",
        actor=actor,
        tenant_id=None,
        snapshot=lambda pk: {**audit_snapshot(Tenant.objects.get(pk=pk)), "deleted_with_it": deleted_with_it},
    )


def tenant_membership_save(*, membership: TenantMembership, actor: Actor = None) -> TenantMembership:
    """Let a user see a tenant's pages (with everything below it), audited as
    `tenant_membership.create` / `.update`: memberships decide who sees whose spend."""
    return audited_save(
        instance=membership, action="tenant_membership", actor=actor, tenant_id=membership.tenant_id
    )


def tenant_membership_delete(*, membership: TenantMembership, actor: Actor = None) -> None:
    """Take a user's view of a tenant away, audited as `tenant_membership.delete`."""
    audited_delete(
        instance=membership, action="tenant_membership", actor=actor, tenant_id=membership.tenant_id
    )
