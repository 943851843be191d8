"""Writes for the weekly cost review: its notification, once per tenant and week, to the tenant's
channels (webhooks get the JSON; Slack and e-mail its summary and detail lines)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from budgets.models import NotificationChannel, NotificationDelivery
from budgets.notifications import notification_deliveries_create_keyed
from chargeback import money
from insights.weekly_review_selectors import weekly_review
from tenants.models import Tenant

PAYLOAD_TYPE_WEEKLY_REVIEW = "weekly_review"
UNTAGGED = "(untagged)"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _usd(nanos: int | None) -> str:
    """For people: rounded half-even to cents, with thousands separators."""
    cents = money.round_to_cents(abs(nanos or 0))
    return ("-" if (nanos or 0) < 0 else "") + "$" + format(Decimal(cents).scaleb(-2), ",f")


def _change_text(change_nanos: int, percent: float | None) -> str:
    sign = "+" if change_nanos >= 0 else "-"
    amount = f"{sign}{_usd(abs(change_nanos))}"
    return f"{amount} ({percent:+.1f}%)" if percent is not None else f"{amount} (new)"


def _change_row(row: dict[str, Any], label: str) -> dict[str, Any]:
    return {
        label: row[label],
        "spend_usd": money.nanos_to_str(row["spend_nanos"]),
        "previous_spend_usd": money.nanos_to_str(row["previous_spend_nanos"]),
        "change_usd": money.nanos_to_str(row["change_nanos"]),
        "change_percent": row["change_percent"],
    }


def weekly_review_payload(review: dict[str, Any]) -> dict[str, Any]:
    """The JSON sent for a weekly review, with `summary` and `details` for Slack and e-mail."""
    tenant, week = review["tenant"], review["week"]
    summary = (
        f"Weekly cost review for {tenant.slug}, {week.key}: {_usd(review['spend_nanos'])} spent, "
        f"{_change_text(review['change_nanos'], review['change_percent'])} on the week before"
    )
    details = [f"Week {week.first_day:%Y-%m-%d} to {week.end.astimezone(UTC):%Y-%m-%d} ({week.time_zone})"]
    details += [
        f"Tenant {row['tenant']}: {_usd(row['spend_nanos'])} ({_change_text(row['change_nanos'], row['change_percent'])})"
        for row in review["by_tenant"]
    ]
    details += [
        f"Feature {row['feature'] or UNTAGGED}: {_usd(row['spend_nanos'])} "
        f"({_change_text(row['change_nanos'], row['change_percent'])})"
        for row in review["by_feature"]
    ]
    details += [
        f"New anomaly: {anomaly.tenant.slug}: {anomaly.description}" for anomaly in review["anomalies"]
    ]
    details += [
        f"Budget {status['budget'].tenant.slug} / {status['budget'].name}: {_usd(status['spent_nanos'])} of "
        f"{_usd(status['budget'].amount_nanos)} ({status['percent_used']:.0f}%) in {status['period'].key}"
        for status in review["budgets"]
    ]
    details += [
        f"Opportunity {entry['rank']}: {entry['title']}: {_usd(entry['monthly_savings_nanos'])} a month"
        for entry in review["opportunities"]
    ]
    return {
        "type": PAYLOAD_TYPE_WEEKLY_REVIEW,
        "tenant": tenant.slug,
        "week": {
            "key": week.key,
            "start": _iso(week.start),
            "end": _iso(week.end),
            "time_zone": week.time_zone,
        },
        "spend_usd": money.nanos_to_str(review["spend_nanos"]),
        "previous_spend_usd": money.nanos_to_str(review["previous_spend_nanos"]),
        "change_usd": money.nanos_to_str(review["change_nanos"]),
        "change_percent": review["change_percent"],
        "by_tenant": [_change_row(row, "tenant") for row in review["by_tenant"]],
        "by_feature": [_change_row(row, "feature") for row in review["by_feature"]],
        "anomalies": [
            {
                "id": anomaly.pk,
                "tenant": anomaly.tenant.slug,
                "dimension": anomaly.dimension,
                "dimension_value": anomaly.dimension_value,
                "start": _iso(anomaly.started_at),
                "impact_usd": money.nanos_to_str(anomaly.impact_nanos),
                "description": anomaly.description,
            }
            for anomaly in review["anomalies"]
        ],
        "budgets": [
            {
                "id": status["budget"].pk,
                "name": status["budget"].name,
                "tenant": status["budget"].tenant.slug,
                "period": status["period"].key,
                "spent_usd": money.nanos_to_str(status["spent_nanos"]),
                "amount_usd": money.nanos_to_str(status["budget"].amount_nanos),
                "forecast_usd": money.nanos_to_str(status["forecast_nanos"]),
                "percent_used": round(status["percent_used"], 2),
            }
            for status in review["budgets"]
        ],
        "opportunities": [
            {
                "rank": entry["rank"],
                "kind": entry["kind"],
                "title": entry["title"],
                "monthly_savings_usd": money.nanos_to_str(entry["monthly_savings_nanos"]),
            }
            for entry in review["opportunities"]
        ],
        "summary": summary,
        "details": details,
    }


def weekly_review_send(*, tenant: Tenant, now: datetime | None = None) -> list[NotificationDelivery]:
    """Send the tenant's weekly review (its last complete week) to its notification channels,
    once per channel and week (dedupe key `weekly-review:<tenant>:<ISO week>`); a rerun of the same
    week sends nothing again. Returns the deliveries (none when the tenant has no channels)."""
    now = now or timezone.now()
    review = weekly_review(tenant, now=now)
    with transaction.atomic():
        return notification_deliveries_create_keyed(
            tenant=tenant,
            dedupe_key=f"weekly-review:{tenant.slug}:{review['week'].key}",
            payload=weekly_review_payload(review),
        )


def weekly_review_tenant_ids() -> list[int]:
    """Tenants that get a weekly review: the active ones with active channels of their own (a
    review covers the subtree, so a team without channels is in its parent's review)."""
    return sorted(
        set(
            NotificationChannel.objects.filter(is_active=True, tenant__is_active=True).values_list(
                "tenant_id", flat=True
            )
        )
    )


def weekly_reviews_send_all(*, now: datetime | None = None) -> int:
    """Every due weekly review, one tenant after another; returns the tenants reviewed."""
    now = now or timezone.now()
    tenant_ids = weekly_review_tenant_ids()
    for tenant in Tenant.objects.filter(pk__in=tenant_ids).order_by("pk"):
        weekly_review_send(tenant=tenant, now=now)
    return len(tenant_ids)
