"""Writes to the audit log. Services that change audited objects call `audit_record` in their own
transaction, with snapshots of the object before and after (`audit_snapshot`)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from django.db import models, transaction

from audit.models import AuditEvent

# Who made a change: a Django user (admin, pages), an API key (or the API's request.user for it),
# a string naming a process ("beat", "manage.py create_api_key"), or None for "system".
Actor = Any

SYSTEM_ACTOR = "system"


def _json_value(value: Any) -> Any:
    """A field value as JSON keeps it: decimals as strings (exact), datetimes in ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return None  # binary payloads (PDFs) are not audit material
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value


def audit_snapshot(
    instance: models.Model | None,
    *,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] = ("id", "created_at"),
) -> dict[str, Any] | None:
    """The instance's concrete field values as a JSON-safe dict (foreign keys as `<name>_id`).

    `fields` limits the snapshot to those fields; `exclude` drops fields that are noise or secret.
    None for no instance, so that `before` of a creation and `after` of a deletion are null.
    """
    if instance is None:
        return None
    wanted = set(fields) if fields is not None else None
    skipped = set(exclude)
    snapshot = {}
    for field in instance._meta.concrete_fields:
        if field.name in skipped or (wanted is not None and field.name not in wanted):
            continue
        snapshot[field.attname] = _json_value(getattr(instance, field.attname))
    return snapshot


def _actor_fields(actor: Actor) -> dict[str, Any]:
    from tenants.models import ApiKey  # tenants' services call this module

    api_key = getattr(actor, "api_key", actor)  # the API's request.user wraps the key
    if isinstance(api_key, ApiKey):
        return {
            "actor_type": AuditEvent.ActorType.API_KEY,
            "actor_api_key_id": api_key.pk,
            "actor_label": f"{api_key.prefix} ({api_key.name})",
        }
    if actor is None or isinstance(actor, str):
        return {"actor_type": AuditEvent.ActorType.SYSTEM, "actor_label": actor or SYSTEM_ACTOR}
    if getattr(actor, "is_authenticated", False) and isinstance(getattr(actor, "pk", None), int):
        return {
            "actor_type": AuditEvent.ActorType.USER,
            "actor_user_id": actor.pk,
            "actor_label": actor.get_username(),
        }
    raise TypeError(f"Cannot audit a change by {actor!r}: pass a user, an API key, a string or None.")


@transaction.atomic
def audit_record(
    *,
    actor: Actor,
    action: str,
    instance: models.Model,
    tenant_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    object_id: Any = None,
) -> AuditEvent:
    """Record that `actor` did `action` (e.g. "budget.update") to `instance`, which belongs to
    `tenant_id` (None: a global object), with its snapshots before and after.

    Call it inside the transaction of the change. `object_id` is only needed when the instance no
    longer has one (after a delete).
    """
    identifier = object_id if object_id is not None else instance.pk
    return AuditEvent.objects.create(
        **_actor_fields(actor),
        action=action,
        object_type=instance._meta.label_lower,
        object_id="" if identifier is None else str(identifier),
        object_repr=str(instance)[:300],
        tenant_id=tenant_id,
        before=before,
        after=after,
    )


def _stored_snapshot(model: type[models.Model]) -> Callable[[Any], dict[str, Any] | None]:
    return lambda pk: audit_snapshot(model.objects.filter(pk=pk).first()) if pk is not None else None


@transaction.atomic
def audited_save(
    *,
    instance: models.Model,
    action: str,
    actor: Actor,
    tenant_id: int | Callable[[models.Model], int | None] | None,
    write: Callable[[], None] | None = None,
    snapshot: Callable[[Any], dict[str, Any] | None] | None = None,
) -> models.Model:
    """Save `instance` (validated, or by `write` when the change has more to it, such as child
    rows), one change at a time, recording `<action>.create` or `<action>.update` with its stored
    values before and after (`snapshot(pk)`, default: its own fields); nothing when nothing changed.
    `tenant_id` may be a function of the saved instance (a new tenant's own id exists only then)."""
    model = type(instance)
    snapshot = snapshot or _stored_snapshot(model)
    if instance.pk is not None:
        model.objects.select_for_update().filter(pk=instance.pk).first()
    before = snapshot(instance.pk)
    if write is None:
        instance.full_clean()
        instance.save()
    else:
        write()
    after = snapshot(instance.pk)
    if after != before:
        audit_record(
            actor=actor,
            action=f"{action}.update" if before else f"{action}.create",
            instance=instance,
            tenant_id=tenant_id(instance) if callable(tenant_id) else tenant_id,
            before=before,
            after=after,
        )
    return instance


@transaction.atomic
def audited_delete(
    *,
    instance: models.Model,
    action: str,
    actor: Actor,
    tenant_id: int | None,
    snapshot: Callable[[Any], dict[str, Any] | None] | None = None,
) -> None:
    """Delete `instance`, recording `<action>.delete` with its stored values (`snapshot(pk)`)."""
    object_id = instance.pk
    before = (snapshot or _stored_snapshot(type(instance)))(object_id)
    instance.delete()
    audit_record(
        actor=actor,
        action=f"{action}.delete",
        instance=instance,
        object_id=object_id,
        tenant_id=tenant_id,
        before=before,
        after=None,
    )
