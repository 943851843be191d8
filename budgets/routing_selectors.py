"""Routing policies at the allowance check: which model to suggest for a call, and which rule chose it.

This runs on the allowance hot path. A tenant's policies (its own and its ancestors') are read once
per BUDGET_DEFINITION_CACHE_SECONDS per process, like budget definitions, and compiled into plain
tuples; choosing then costs a few comparisons per rule and, for an A/B policy, one SHA-256.

A/B arms: `routing_arm` hashes "<policy id>:<split tag value>" with SHA-256 into [0, 1) and compares
it with the policy's share, so a user (or session, ...) stays in one arm in every process and after
restarts, and the arms hold the share they were given. Clients send the arm back on the call's usage
record as tags (`routing_policy`, `routing_arm`); insights compares the arms by those tags.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings

from budgets.models import RoutingPolicy
from tenants.selectors import tenant_ancestor_ids

# The tags a client puts on the usage record of a routed call (the allowance answer lists them).
ROUTING_POLICY_TAG = "routing_policy"
ROUTING_ARM_TAG = "routing_arm"
ARM_POLICY = "policy"
ARM_CONTROL = "control"
_SHARE_SCALE = 10_000  # shares have 4 decimals
_HASH_SPACE = 2**64


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule_id: int
    position: int
    description: str
    tag_key: str
    tag_value: str
    from_model: str
    min_budget_hundredths: int | None  # percent x 100
    max_input_tokens: int | None
    target_model: str
    target_provider: str


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy_id: int
    name: str
    tenant_slug: str
    share_scaled: int  # share x 10,000
    split_tag: str
    rules: tuple[CompiledRule, ...]


class RoutingChoice(NamedTuple):
    """What a routing policy decided for one call: the rule that matched and the call's arm. In the
    control arm of an A/B policy nothing is suggested, but the call is still tagged with its arm.
    (A named tuple: made on the allowance hot path, and several times cheaper than a dataclass.)"""

    policy_id: int
    policy_name: str
    rule_id: int
    rule_position: int
    rule_description: str
    arm: str
    model: str
    provider: str

    @property
    def suggested_model(self) -> str:
        return self.model if self.arm == ARM_POLICY else ""

    @property
    def tags(self) -> dict[str, str]:
        """The tags the client puts on the call's usage record, for the policy's report."""
        return {ROUTING_POLICY_TAG: str(self.policy_id), ROUTING_ARM_TAG: self.arm}


def routing_arm(policy_id: int, split_value: str, share_scaled: int) -> str:
    """The arm of a call: SHA-256 of "<policy id>:<split value>" as a number in [0, 1), in the
    policy arm when below the share (`share_scaled` = share x 10,000). Integers only: exact."""
    digest = hashlib.sha256(f"{policy_id}:{split_value}".encode()).digest()
    position = int.from_bytes(digest[:8], "big")
    return ARM_POLICY if position * _SHARE_SCALE < share_scaled * _HASH_SPACE else ARM_CONTROL


def routing_rule_matches(
    rule: CompiledRule,
    model_id: str,
    tags: dict[str, str],
    estimated_input_tokens: int | None,
    budget_usage: list[tuple[int, int]] | None,
) -> bool:
    """Whether every condition the rule sets holds for the call. `budget_usage` is (spent, amount)
    in nanos of each budget that applies to the call, None when spend could not be read: a budget
    condition then does not hold (nor does an input condition without an estimate)."""
    if rule.tag_key and tags.get(rule.tag_key) != rule.tag_value:
        return False
    if rule.from_model and rule.from_model != model_id:
        return False
    if rule.max_input_tokens is not None and (
        estimated_input_tokens is None or estimated_input_tokens >= rule.max_input_tokens
    ):
        return False
    if rule.min_budget_hundredths is not None:
        # spent / amount >= percent / 100, in integers.
        threshold = rule.min_budget_hundredths
        if not budget_usage or not any(
            spent * 10_000 >= threshold * amount for spent, amount in budget_usage
        ):
            return False
    return True


def routing_choose(
    policies: tuple[CompiledPolicy, ...],
    *,
    model_id: str,
    tags: dict[str, str],
    estimated_input_tokens: int | None,
    budget_usage: list[tuple[int, int]] | None,
) -> RoutingChoice | None:
    """The first policy (in their order) with a matching rule decides; None when none matches. An
    A/B policy skips calls without its split tag: they belong to neither arm."""
    for policy in policies:
        split_value = None
        if policy.share_scaled < _SHARE_SCALE:
            split_value = tags.get(policy.split_tag)
            if not split_value:
                continue
        for rule in policy.rules:
            if routing_rule_matches(rule, model_id, tags, estimated_input_tokens, budget_usage):
                arm = (
                    ARM_POLICY
                    if split_value is None
                    else routing_arm(policy.policy_id, split_value, policy.share_scaled)
                )
                return RoutingChoice(
                    policy.policy_id,
                    policy.name,
                    rule.rule_id,
                    rule.position,
                    rule.description,
                    arm,
                    rule.target_model,
                    rule.target_provider,
                )
    return None


# --- definitions, cached per process ------------------------------------------------------------


_policy_cache: dict[int, tuple[float, tuple[CompiledPolicy, ...]]] = {}


def _compile(policy: RoutingPolicy) -> CompiledPolicy:
    rules = tuple(
        CompiledRule(
            rule_id=rule.pk,
            position=rule.position,
            description=rule.description,
            tag_key=rule.tag_key,
            tag_value=rule.tag_value,
            from_model=rule.from_model,
            min_budget_hundredths=None
            if rule.min_budget_percent is None
            else int(rule.min_budget_percent * 100),
            max_input_tokens=rule.max_input_tokens,
            target_model=rule.target_model,
            target_provider=rule.target_provider,
        )
        for rule in sorted(policy.rules.all(), key=lambda rule: rule.position)
    )
    return CompiledPolicy(
        policy_id=policy.pk,
        name=policy.name,
        tenant_slug=policy.tenant.slug,
        share_scaled=int(policy.share * _SHARE_SCALE),
        split_tag=policy.split_tag,
        rules=rules,
    )


def routing_policies_for_tenant(tenant_id: int) -> tuple[CompiledPolicy, ...]:
    """Active policies of the tenant and its ancestors in the order they are tried: precedence,
    then the nearest tenant, then age. Cached briefly per process (definitions change rarely)."""
    cached = _policy_cache.get(tenant_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    chain = tenant_ancestor_ids(tenant_id)
    depth = {ancestor: index for index, ancestor in enumerate(chain)}
    policies = (
        RoutingPolicy.objects.filter(tenant_id__in=chain, is_active=True)
        .select_related("tenant")
        .prefetch_related("rules")
    )
    ordered = sorted(policies, key=lambda policy: (policy.precedence, depth[policy.tenant_id], policy.pk))
    compiled = tuple(_compile(policy) for policy in ordered if policy.rules.all())
    _policy_cache[tenant_id] = (time.monotonic() + settings.BUDGET_DEFINITION_CACHE_SECONDS, compiled)
    return compiled


def routing_policies_forget() -> None:
    _policy_cache.clear()


def routing_policy_list(*, principal):
    return RoutingPolicy.objects.visible_to(principal).select_related("tenant").prefetch_related("rules")
