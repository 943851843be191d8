"""Reads for the weekly cost review: one tenant's (and its subtree's) last complete week, against
the week before, with new anomalies, budget status and the top savings opportunities.

Spend here is charged cost, computed by the costs query (`chargeback.costs`), so every figure of the
review equals what the dashboards and `/api/v1/costs/` show for the same week. Opportunities are
the savings report's (list cost, over the 30 days before the week ends).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from budgets.models import Budget
from budgets.selectors import budget_status
from chargeback.calendar import local_date, local_midnight
from chargeback.costs import SUM_FIELDS, CostQuery, costs_query
from insights.models import Anomaly
from insights.optimisation_selectors import DEFAULT_PERIOD_DAYS, OptimisationScope, savings_report
from tenants.models import Tenant
from tenants.selectors import tenant_descendant_ids

TOP_ROWS = 10
TOP_OPPORTUNITIES = 5
_COST = SUM_FIELDS.index("cost_nanos")


@dataclass(frozen=True)
class ReviewWeek:
    """A Monday-to-Monday week of a tenant's calendar, [start, end) in UTC."""

    key: str  # ISO week, e.g. 2026-W47
    first_day: date
    start: datetime
    end: datetime
    time_zone: str


def review_week_last_complete(tenant: Tenant, now: datetime) -> ReviewWeek:
    """The last week (Monday to Monday in the tenant's zone) that has ended by `now`."""
    zone = tenant.time_zone
    today = local_date(now, zone)
    monday = today - timedelta(days=today.weekday()) - timedelta(days=7)
    year, week, _ = monday.isocalendar()
    return ReviewWeek(
        key=f"{year}-W{week:02d}",
        first_day=monday,
        start=local_midnight(monday, zone),
        end=local_midnight(monday + timedelta(days=7), zone),
        time_zone=zone,
    )


def _spend_by(tenant_ids: list[int], week: ReviewWeek, dimension: str | None, *, shift: timedelta) -> dict:
    query = CostQuery(
        start=week.start - shift,
        end=week.end - shift,
        granularity="total",
        time_zone=week.time_zone,
        group_by=(dimension,) if dimension else (),
        tenant_ids=tenant_ids,
    )
    result = costs_query(query)
    if dimension is None:
        return {"": result.totals[_COST]}
    return {row.group[dimension]: row.sums[_COST] for row in result.rows}


def _changes(current: dict[str, int], previous: dict[str, int], label: str) -> list[dict[str, Any]]:
    rows = [
        {
            label: key,
            "spend_nanos": current.get(key, 0),
            "previous_spend_nanos": previous.get(key, 0),
            "change_nanos": current.get(key, 0) - previous.get(key, 0),
            "change_percent": _percent(current.get(key, 0), previous.get(key, 0)),
        }
        for key in set(current) | set(previous)
    ]
    rows.sort(key=lambda row: (-row["spend_nanos"], -abs(row["change_nanos"]), row[label]))
    return rows[:TOP_ROWS]


def _percent(current: int, previous: int) -> float | None:
    return round((current - previous) * 100 / previous, 2) if previous else None


def weekly_review(tenant: Tenant, *, now: datetime) -> dict[str, Any]:
    """The review of the tenant's subtree for its last complete week: spend and its change against
    the week before, in total, by tenant and by feature; anomalies opened during the week; the
    status of its budgets now; and the top savings opportunities of the 30 days to the week's end."""
    week = review_week_last_complete(tenant, now)
    tenant_ids = tenant_descendant_ids(tenant.pk)
    previous_week = timedelta(days=7)
    total = _spend_by(tenant_ids, week, None, shift=timedelta(0))[""]
    previous_total = _spend_by(tenant_ids, week, None, shift=previous_week)[""]
    by_tenant = _changes(
        _spend_by(tenant_ids, week, "tenant", shift=timedelta(0)),
        _spend_by(tenant_ids, week, "tenant", shift=previous_week),
        "tenant",
    )
    by_feature = _changes(
        _spend_by(tenant_ids, week, "tag.feature", shift=timedelta(0)),
        _spend_by(tenant_ids, week, "tag.feature", shift=previous_week),
        "feature",
    )
    anomalies = list(
        Anomaly.objects.select_related("tenant")
        .filter(tenant_id__in=tenant_ids, created_at__gte=week.start, created_at__lt=week.end)
        .order_by("-impact_nanos", "pk")[:TOP_ROWS]
    )
    budgets = [
        budget_status(budget, now)
        for budget in Budget.objects.select_related("tenant")
        .prefetch_related("thresholds")
        .filter(tenant_id__in=tenant_ids, is_active=True)
        .order_by("tenant__slug", "name")
    ]
    scope = OptimisationScope(
        tenant_ids=tenant_ids,
        start=week.end - timedelta(days=DEFAULT_PERIOD_DAYS),
        end=week.end,
        time_zone=week.time_zone,
        now=min(now, week.end),
    )
    opportunities = savings_report(scope)["opportunities"][:TOP_OPPORTUNITIES]
    return {
        "tenant": tenant,
        "week": week,
        "spend_nanos": total,
        "previous_spend_nanos": previous_total,
        "change_nanos": total - previous_total,
        "change_percent": _percent(total, previous_total),
        "by_tenant": by_tenant,
        "by_feature": by_feature,
        "anomalies": anomalies,
        "budgets": budgets,
        "opportunities": opportunities,
    }
