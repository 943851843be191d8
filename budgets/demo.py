"""Demo data of budgets: a routing policy with an A/B split, and the calls of both arms.

Code Assist tries moving code completion from claude-sonnet-4-5 to claude-3-5-haiku-latest for half
of its developers (split by the `user` tag). The calls of the experiment carry the tags a gateway
copies from the allowance answer (`routing_policy`, `routing_arm`), with each developer's arm from
the same stable hash the allowance check uses, so the policy's report has two arms to compare.
Deterministic and idempotent like the rest of the demo (chargeback.demo).
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from budgets.models import RoutingPolicy
from budgets.routing_selectors import ARM_POLICY, ROUTING_ARM_TAG, ROUTING_POLICY_TAG, routing_arm
from budgets.routing_services import routing_policy_save
from chargeback.demo import EVENT_ID_PREFIX, OFFICE_HOURS, SEED, WORKLOADS, SeedReport, demo_call
from chargeback.models import UsageRecord
from chargeback.services import usage_records_ingest
from tenants.models import Tenant

POLICY_TENANT = "code-assist"
POLICY_NAME = "Code completion on Haiku (A/B)"
POLICY_MODEL = "claude-3-5-haiku-latest"
CONTROL_MODEL = "claude-sonnet-4-5"
FEATURE = "code-completion"
SHARE = Decimal("0.5")
DEVELOPERS = 60
CALLS_PER_OFFICE_HOUR = 10
# The experiment started this many days before the demo organisation was created.
STARTED_DAYS_BEFORE_ANCHOR = 7


def _policy(tenant: Tenant, anchor: date) -> RoutingPolicy:
    existing = RoutingPolicy.objects.filter(tenant=tenant, name=POLICY_NAME).first()
    if existing is not None:
        return existing  # maybe edited since: left alone
    started = datetime.combine(anchor - timedelta(days=STARTED_DAYS_BEFORE_ANCHOR), time(), UTC)
    return routing_policy_save(
        policy=RoutingPolicy(
            tenant=tenant, name=POLICY_NAME, precedence=10, share=SHARE, split_tag="user", active_from=started
        ),
        rules=[
            {
                "tag_key": "feature",
                "tag_value": FEATURE,
                "target_model": POLICY_MODEL,
                "target_provider": "anthropic",
            }
        ],
    )


def ab_test_calls(policy: RoutingPolicy, *, start: datetime, end: datetime, time_zone: str) -> list[dict]:
    """The experiment's calls in [start, end) (from the policy's start on), day by day."""
    workload = next(workload for workload in WORKLOADS if workload.key == FEATURE)
    zone = ZoneInfo(time_zone)
    share_scaled = int(policy.share * 10_000)
    calls = []
    day = max(start, policy.active_from).date()
    while day <= (end - timedelta(microseconds=1)).date():
        rng = random.Random(f"{SEED}:routing-ab:{day.isoformat()}")
        stamp = day.strftime("%Y%m%d")
        index = 0
        for hour in range(24):
            hour_start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
            local = hour_start.astimezone(zone)
            weekday_factor = workload.week[local.weekday()]
            count = int(CALLS_PER_OFFICE_HOUR * OFFICE_HOURS[local.hour] * weekday_factor + rng.random())
            for _ in range(count):
                at = hour_start + timedelta(milliseconds=rng.randrange(3_600_000))
                user = f"dev-{rng.randrange(DEVELOPERS):02d}"
                arm = routing_arm(policy.pk, user, share_scaled)
                event_id = f"{EVENT_ID_PREFIX}routing-ab-{stamp}-{index:05d}"
                index += 1
                call = demo_call(
                    rng, workload, event_id, at, POLICY_MODEL if arm == ARM_POLICY else CONTROL_MODEL
                )
                call["tags"].update({"user": user, ROUTING_POLICY_TAG: str(policy.pk), ROUTING_ARM_TAG: arm})
                if policy.active_from <= at and start <= at < end:
                    calls.append(call)
        day += timedelta(days=1)
    return calls


def seed_routing_demo(
    *, report: SeedReport, tenants: dict[str, Tenant], anchor: date, days: int, now: datetime
) -> None:
    """The demo routing policy (created once) and its A/B calls over the seeded hours."""
    tenant = tenants[POLICY_TENANT]
    policy = _policy(tenant, anchor)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    calls = ab_test_calls(policy, start=start, end=end, time_zone=tenant.time_zone)
    stored = set(
        UsageRecord.objects.filter(
            tenant=tenant, event_id__startswith=f"{EVENT_ID_PREFIX}routing-ab-", occurred_at__gte=start
        ).values_list("event_id", flat=True)
    )
    new = [call for call in calls if call["event_id"] not in stored]
    report.records_generated += len(calls)
    report.usage.duplicates += len(calls) - len(new)
    for offset in range(0, len(new), 5000):
        report.usage.merge(
            usage_records_ingest(items=new[offset : offset + 5000], scope_tenant_ids=None, source="import")
        )
    report.notes.append(
        f"Routing policy '{policy.name}' (id {policy.pk}, {POLICY_TENANT}): {int(policy.share * 100)}% of developers "
        f"on {POLICY_MODEL}; {len(calls):,} A/B calls in the seeded hours. Report: /api/v1/routing-policies/{policy.pk}/report"
    )
