"""One of every tenant-owned object the API and the pages serve, for a given tenant.

Used by the schema fuzz test (so that detail endpoints sometimes hit real objects) and by the
tenant isolation matrix (to create another tenant's objects and check nobody else reaches them).
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from budgets.models import Budget, NotificationChannel, RoutingPolicy
from budgets.routing_services import routing_policy_save
from chargeback.models import Statement
from chargeback.services import statement_finalize, statement_generate, usage_records_ingest
from insights.models import AlertRule, AlertRuleEvent, Anomaly, AnomalySubscription, Forecast
from tenants.models import Tenant
from tests.factories import BudgetFactory, BudgetThresholdFactory, NotificationChannelFactory

# Inside the months the statements cover, and before "now" in every test.
USAGE_AT = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)


def usage_create(
    tenant: Tenant, *, cost_usd: str = "12.50", at: datetime = USAGE_AT, event_id: str = ""
) -> None:
    """One record of an in-house model with an exact client-reported cost, through real ingestion."""
    record = {
        "event_id": event_id or f"{tenant.slug}-{at.isoformat()}-{cost_usd}",
        "timestamp": at.isoformat(),
        "tenant": tenant.slug,
        "provider": "acme",
        "model": "in-house",
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_usd": cost_usd,
        "tags": {"feature": f"feature-of-{tenant.slug}"},
    }
    result = usage_records_ingest(
        items=[json.dumps(record).encode()], scope_tenant_ids=None, now=max(at + timedelta(minutes=1), NOW)
    )
    assert result.accepted == 1, result.errors


def statement_create(tenant: Tenant, *, period_key: str = "2026-03", finalized: bool = False) -> Statement:
    """A statement of `tenant` (made billable) for a month with some usage; optionally finalized."""
    if not tenant.is_billable:
        tenant.is_billable = True
        tenant.save(update_fields=["is_billable"])
    year, month = (int(part) for part in period_key.split("-"))
    usage_create(tenant, at=datetime(year, month, 10, 12, 0, tzinfo=UTC))
    statement = statement_generate(tenant=tenant, period_key=period_key, now=NOW)
    if finalized:
        statement = statement_finalize(statement_id=statement.pk, now=NOW)
    return statement


def budget_create(tenant: Tenant) -> Budget:
    budget = BudgetFactory(tenant=tenant, name=f"budget of {tenant.slug}")
    BudgetThresholdFactory(budget=budget, percent=80)
    return budget


def anomaly_create(tenant: Tenant, **fields) -> Anomaly:
    return Anomaly.objects.create(
        tenant=tenant,
        **fields,
        granularity="hour",
        dimension="total",
        direction="increase",
        started_at=NOW - timedelta(hours=2),
        ended_at=NOW - timedelta(hours=1),
        actual_nanos=50 * 10**9,
        expected_nanos=10 * 10**9,
        impact_nanos=40 * 10**9,
        impact_percent=400,
        max_impact_nanos=40 * 10**9,
        current_score=9.5,
        max_score=9.5,
        rule="point",
    )


def subscription_create(tenant: Tenant) -> AnomalySubscription:
    return AnomalySubscription.objects.create(tenant=tenant, name=f"subscription of {tenant.slug}")


def alert_rule_create(tenant: Tenant) -> AlertRule:
    rule = AlertRule.objects.create(
        tenant=tenant, name=f"rule of {tenant.slug}", metric="cost", window="day", threshold=200
    )
    AlertRuleEvent.objects.create(
        rule=rule, fired_at=NOW, window_start=NOW, value=1, last_value=1, peak_value=1
    )
    return rule


def forecast_create(tenant: Tenant) -> Forecast:
    return Forecast.objects.create(
        tenant=tenant,
        kind="month",
        period_key="2026-04",
        period_start=datetime(2026, 4, 1, tzinfo=UTC),
        period_end=datetime(2026, 5, 1, tzinfo=UTC),
        computed_at=NOW,
        actual_nanos=10 * 10**9,
        forecast_nanos=30 * 10**9,
        lower_nanos=25 * 10**9,
        upper_nanos=36 * 10**9,
        method="ets",
        history_days=90,
    )


def notification_channel_create(tenant: Tenant) -> NotificationChannel:
    return NotificationChannelFactory(tenant=tenant, name=f"channel of {tenant.slug}")


def routing_policy_create(tenant: Tenant) -> RoutingPolicy:
    return routing_policy_save(
        policy=RoutingPolicy(tenant=tenant, name=f"policy of {tenant.slug}"),
        rules=[{"tag_key": "feature", "tag_value": "search", "target_model": "gpt-4o-mini"}],
    )


@dataclass
class TenantObjects:
    """Everything a tenant owns, created by `tenant_objects_create`."""

    tenant: Tenant
    statement: Statement
    finalized_statement: Statement
    budget: Budget
    anomaly: Anomaly
    resolved_anomaly: Anomaly
    subscription: AnomalySubscription
    alert_rule: AlertRule
    forecast: Forecast
    channel: NotificationChannel
    routing_policy: RoutingPolicy


def tenant_objects_create(tenant: Tenant) -> TenantObjects:
    """One of each object for `tenant`: a draft (March) and a finalized (February) statement,
    a budget with a threshold, an open and a resolved anomaly, a subscription, an alert rule with
    an event, a forecast, a notification channel and a routing policy with a rule."""
    return TenantObjects(
        tenant=tenant,
        statement=statement_create(tenant, period_key="2026-03"),
        finalized_statement=statement_create(tenant, period_key="2026-02", finalized=True),
        budget=budget_create(tenant),
        anomaly=anomaly_create(tenant),
        resolved_anomaly=anomaly_create(tenant, status="resolved", resolved_at=NOW),
        subscription=subscription_create(tenant),
        alert_rule=alert_rule_create(tenant),
        forecast=forecast_create(tenant),
        channel=notification_channel_create(tenant),
        routing_policy=routing_policy_create(tenant),
    )
