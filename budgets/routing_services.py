"""Writes for routing policies: definitions with their rules."""

from __future__ import annotations

from collections.abc import Iterable

from audit.services import Actor, audit_snapshot, audited_delete, audited_save
from budgets.models import RoutingPolicy, RoutingRule
from budgets.routing_selectors import routing_policies_forget


def _routing_policy_snapshot(policy_id: int | None) -> dict | None:
    """A policy's stored values with its rules, for the audit log."""
    policy = RoutingPolicy.objects.filter(pk=policy_id).first() if policy_id is not None else None
    snapshot = audit_snapshot(policy)
    if snapshot is not None:
        snapshot["rules"] = [
            audit_snapshot(rule, exclude=("id", "policy")) for rule in policy.rules.order_by("position")
        ]
    return snapshot


def routing_policy_save(
    *, policy: RoutingPolicy, rules: Iterable[dict] | None = None, actor: Actor = None
) -> RoutingPolicy:
    """Validate and save a routing policy, replacing its rules when given. Rules without a
    position are numbered in the order given (after the highest position given). Audited as
    `routing_policy.create` or `.update`, rules included, by `actor`."""

    def write() -> None:
        policy.full_clean()
        policy.save()
        if rules is not None:
            _routing_rules_replace(policy, rules)

    audited_save(
        instance=policy,
        action="routing_policy",
        actor=actor,
        tenant_id=policy.tenant_id,
        write=write,
        snapshot=_routing_policy_snapshot,
    )
    routing_policies_forget()
    return policy


def _routing_rules_replace(policy: RoutingPolicy, rules: Iterable[dict]) -> None:
    rules = [dict(rule) for rule in rules]
    next_position = max((rule["position"] for rule in rules if rule.get("position")), default=0) + 1
    for rule in rules:
        if not rule.get("position"):
            rule["position"] = next_position
            next_position += 1
    policy.rules.all().delete()
    created = [RoutingRule(policy=policy, **rule) for rule in rules]
    for rule in created:
        rule.full_clean(exclude=["policy"], validate_unique=False, validate_constraints=False)
    RoutingRule.objects.bulk_create(created)


def routing_policy_delete(*, policy: RoutingPolicy, actor: Actor = None) -> None:
    """Delete a routing policy with its rules (audited as `routing_policy.delete`)."""
    audited_delete(
        instance=policy,
        action="routing_policy",
        actor=actor,
        tenant_id=policy.tenant_id,
        snapshot=_routing_policy_snapshot,
    )
    routing_policies_forget()
