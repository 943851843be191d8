"""Writes for tenants and API keys."""

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction

from tenants.models import ApiKey, Tenant
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


@transaction.atomic
def api_key_create(*, name: str, scopes: Iterable[str], tenant: Tenant | None = None) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored and cannot be shown again."""
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
    return api_key, secret


def api_key_touch(*, api_key: ApiKey, now: datetime) -> None:
    """Record that the key was used, at most once a minute so that authentication stays read-only."""
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


def api_key_revoke(*, api_key: ApiKey) -> None:
    api_key.is_active = False
    api_key.save(update_fields=["is_active"])


def tenant_check_parent(tenant: Tenant, parent: Tenant | None) -> None:
    """Refuse a parent that is the tenant itself or below it (a loop)."""
    if parent is None or tenant.pk is None:
        return
    if parent.pk in tenant_descendant_ids(tenant.pk):
        raise ValidationError(
            f"{parent.slug} is {tenant.slug} itself or below it; a tenant tree cannot loop.",
            code="tenant_cycle",
        )


@transaction.atomic
def tenant_save(*, tenant: Tenant) -> Tenant:
    """Validate and save a new or changed tenant (the admin and the seed both come through here)."""
    tenant_check_parent(tenant, tenant.parent)
    tenant.full_clean()
    tenant.save()
    return tenant


def tenant_create(*, slug: str, name: str, parent: Tenant | None = None, **fields) -> Tenant:
    return tenant_save(tenant=Tenant(slug=slug, name=name, parent=parent, **fields))
