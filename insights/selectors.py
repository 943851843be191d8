"""Reads for insights: spend series from the rollups, root causes, and tenant-scoped listings."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
from django.db.models import Q, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import TruncHour

from chargeback.calendar import floor_hour, local_date, local_midnight
from chargeback.models import LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKET_FIELDS, UsageRecord, UsageRollupHourly
from insights.detection import DAY, HOUR
from insights.models import (
    AlertRule,
    AlertRuleEvent,
    Anomaly,
    AnomalySubscription,
    Forecast,
    SeriesDimension,
)
from tenants.models import Tenant
from tenants.selectors import tenant_descendant_ids

# History each detection run reads: hourly series need four weeks to fit and a week to run over
# causally; daily series four months.
HOURLY_HISTORY = timedelta(days=35)
DAILY_HISTORY_DAYS = 120
# Features and models per tenant that get series of their own (the largest by recent spend).
MAX_SERIES_PER_DIMENSION = 20
# Root causes: the same window this many weeks back is what each candidate was expected to spend.
ROOT_CAUSE_BASELINE_WEEKS = 4
ROOT_CAUSE_TEMPLATE_WEEKS = 2  # prompt templates come from raw records: fewer weeks
ROOT_CAUSES_PER_DIMENSION = 3
MAX_ROOT_CAUSES = 10
UNTAGGED = "(untagged)"


# --- listings, scoped to what the caller may see -------------------------------------------------


def anomaly_list(*, principal):
    return Anomaly.objects.visible_to(principal).select_related("tenant")


def anomaly_subscription_list(*, principal):
    return AnomalySubscription.objects.visible_to(principal).select_related("tenant")


def alert_rule_list(*, principal):
    return AlertRule.objects.visible_to(principal).select_related("tenant")


def alert_rule_event_list(*, principal):
    return AlertRuleEvent.objects.visible_to(principal).select_related("rule__tenant")


def forecast_list(*, principal):
    return Forecast.objects.visible_to(principal).select_related("tenant", "budget")


# --- spend series ----------------------------------------------------------------------------------


@dataclass
class SpendSeries:
    """Cost (nanos) per point of one series, oldest first; `starts[i]` is point i's UTC start."""

    tenant_id: int
    granularity: str
    dimension: str
    value: str
    starts: list[datetime]
    amounts: np.ndarray
    phase: int  # position of the first point in the week (hour of the week, or weekday)

    def point_end(self, index: int) -> datetime:
        if index + 1 < len(self.starts):
            return self.starts[index + 1]
        return self.starts[index] + (timedelta(hours=1) if self.granularity == HOUR else timedelta(days=1))


def tenant_spend_series(tenant: Tenant, *, now: datetime) -> list[SpendSeries]:
    """Hourly and daily cost series of a tenant: its subtree's total, and each of its largest
    features and models (its own usage). Complete hours and complete days (in the tenant's zone)
    before `now` only: a partial hour or day would look like a drop."""
    end_hour = floor_hour(now)
    zone = tenant.time_zone
    today = local_date(now, zone)
    first_day = today - timedelta(days=DAILY_HISTORY_DAYS)
    daily_start = local_midnight(first_day, zone)
    hourly_start = end_hour - HOURLY_HISTORY
    read_from = floor_hour(min(daily_start, hourly_start))

    own = (
        UsageRollupHourly.objects.filter(tenant_id=tenant.pk, hour__gte=read_from, hour__lt=end_hour)
        .values_list("hour", "feature", "model")
        .annotate(cost=Sum("cost_nanos"))
    )
    totals: dict[datetime, int] = defaultdict(int)
    by_feature: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    by_model: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    for hour, feature, model, cost in own:
        by_feature[feature][hour] += cost or 0
        by_model[model][hour] += cost or 0
        totals[hour] += cost or 0
    subtree = tenant_descendant_ids(tenant.pk)
    if len(subtree) > 1:
        totals = defaultdict(int)
        rows = (
            UsageRollupHourly.objects.filter(tenant_id__in=subtree, hour__gte=read_from, hour__lt=end_hour)
            .values_list("hour")
            .annotate(cost=Sum("cost_nanos"))
        )
        for hour, cost in rows:
            totals[hour] += cost or 0

    hour_starts = [
        hourly_start + timedelta(hours=index) for index in range(int(HOURLY_HISTORY / timedelta(hours=1)))
    ]
    day_dates = [first_day + timedelta(days=index) for index in range(DAILY_HISTORY_DAYS)]
    day_starts = [local_midnight(day, zone) for day in day_dates]
    series = []

    def add(dimension: str, value: str, per_hour: dict[datetime, int]) -> None:
        hourly = np.array([per_hour.get(start, 0) for start in hour_starts], dtype=float)
        series.append(
            SpendSeries(
                tenant.pk,
                HOUR,
                dimension,
                value,
                hour_starts,
                hourly,
                hourly_start.weekday() * 24 + hourly_start.hour,
            )
        )
        daily = _daily_amounts(per_hour, day_dates, zone)
        series.append(SpendSeries(tenant.pk, DAY, dimension, value, day_starts, daily, first_day.weekday()))

    add(SeriesDimension.TOTAL, "", totals)
    for dimension, groups in ((SeriesDimension.FEATURE, by_feature), (SeriesDimension.MODEL, by_model)):
        if len(groups) < 2:
            continue  # one feature (or model) is the total again
        recent = {
            value: sum(cost for hour, cost in per_hour.items() if hour >= hourly_start)
            for value, per_hour in groups.items()
        }
        for value in sorted(recent, key=lambda name: (-recent[name], name))[:MAX_SERIES_PER_DIMENSION]:
            add(dimension, value, groups[value])
    return series


def _daily_amounts(per_hour: dict[datetime, int], days: list[date], zone: str) -> np.ndarray:
    index = {day: position for position, day in enumerate(days)}
    amounts = np.zeros(len(days))
    time_zone = ZoneInfo(zone)
    for hour, cost in per_hour.items():
        position = index.get(hour.astimezone(time_zone).date())
        if position is not None:
            amounts[position] += cost
    return amounts


def daily_cost_history(
    *,
    tenant_ids: list[int],
    start: date,
    end: date,
    time_zone: str,
    provider: str = "",
    model: str = "",
    tag_key: str = "",
    tag_value: str = "",
) -> np.ndarray:
    """Charged cost (nanos) per local day in [start, end) of the tenants, narrowed like a budget:
    from the rollups, or from the raw records for tags other than `feature`."""
    days = [start + timedelta(days=offset) for offset in range((end - start).days)]
    if not days or not tenant_ids:
        return np.zeros(len(days))
    first, last = local_midnight(start, time_zone), local_midnight(end, time_zone)
    if tag_key and tag_key != "feature":
        records = UsageRecord.objects.filter(
            tenant_id__in=tenant_ids,
            occurred_at__gte=first,
            occurred_at__lt=last,
            **{f"tags__{tag_key}": tag_value},
        )
        if provider:
            records = records.filter(provider=provider)
        if model:
            records = records.filter(model_id=model)
        rows = (
            records.annotate(hour=TruncHour("occurred_at"))
            .values_list("hour")
            .annotate(cost=Sum("cost_nanos"))
        )
    else:
        rollups = UsageRollupHourly.objects.filter(
            tenant_id__in=tenant_ids, hour__gte=floor_hour(first), hour__lt=last
        )
        if provider:
            rollups = rollups.filter(provider=provider)
        if model:
            rollups = rollups.filter(model=model)
        if tag_key:
            rollups = rollups.filter(feature=tag_value)
        rows = rollups.values_list("hour").annotate(cost=Sum("cost_nanos"))
    per_hour: dict[datetime, int] = defaultdict(int)
    for hour, cost in rows:
        per_hour[hour] += cost or 0
    return _daily_amounts(per_hour, days, time_zone)


# --- root causes -------------------------------------------------------------------------------------


def anomaly_root_causes(anomaly: Anomaly) -> list[dict]:
    """What carries the anomaly's impact, ranked: per dimension (feature, model, child tenant,
    prompt template), each value's actual and expected spend over the anomaly's window and its
    share of the dimension's impact in the anomaly's direction. Expected is what the value spent
    in the same window one to four weeks earlier (on average)."""
    tenant = anomaly.tenant
    start, end = anomaly.started_at, anomaly.ended_at
    sign = 1 if anomaly.direction == Anomaly.Direction.INCREASE else -1
    if anomaly.dimension == SeriesDimension.TOTAL:
        subtree = tenant_descendant_ids(tenant.pk)
        rollups = UsageRollupHourly.objects.filter(tenant_id__in=subtree)
        records = UsageRecord.objects.filter(tenant_id__in=subtree)
        groupings = {"feature": "feature", "model": "model"}
        if len(subtree) > 1:
            groupings["tenant"] = "tenant_id"
    else:
        rollups = UsageRollupHourly.objects.filter(tenant_id=tenant.pk)
        records = UsageRecord.objects.filter(tenant_id=tenant.pk)
        if anomaly.dimension == SeriesDimension.FEATURE:
            rollups = rollups.filter(feature=anomaly.dimension_value)
            records = records.filter(tags__feature=anomaly.dimension_value)
            if not anomaly.dimension_value:
                records = UsageRecord.objects.filter(tenant_id=tenant.pk).filter(
                    Q(tags__feature__isnull=True) | Q(tags__feature="")
                )
            groupings = {"model": "model"}
        else:
            rollups = rollups.filter(model=anomaly.dimension_value)
            records = records.filter(model_id=anomaly.dimension_value)
            groupings = {"feature": "feature"}

    candidates: list[dict] = []
    for dimension, field in groupings.items():
        actual, expected = _window_sums(rollups, "hour", field, start, end, ROOT_CAUSE_BASELINE_WEEKS)
        if dimension == "tenant":
            actual, expected = _by_child_tenant(tenant, actual), _by_child_tenant(tenant, expected)
        candidates.extend(_ranked(dimension, actual, expected, sign))
    templates = records.annotate(template=KeyTextTransform("prompt_template", "tags"))
    actual, expected = _window_sums(
        templates, "occurred_at", "template", start, end, ROOT_CAUSE_TEMPLATE_WEEKS
    )
    if set(actual) | set(expected) != {None}:
        candidates.extend(_ranked("prompt_template", actual, expected, sign))
    candidates.sort(key=lambda cause: (-sign * cause["impact_nanos"], cause["dimension"], cause["value"]))
    return candidates[:MAX_ROOT_CAUSES]


def _window_sums(queryset, time_field: str, group_field: str, start: datetime, end: datetime, weeks: int):
    """Cost per group value in [start, end), and the mean over the same window 1..weeks weeks back
    (weeks before the tenant's first spend do not count)."""

    def sums(window_start: datetime, window_end: datetime) -> dict:
        rows = (
            queryset.filter(**{f"{time_field}__gte": window_start, f"{time_field}__lt": window_end})
            .values_list(group_field)
            .annotate(cost=Sum("cost_nanos"))
        )
        return {value: cost or 0 for value, cost in rows}

    actual = sums(start, end)
    baselines = []
    for week in range(1, weeks + 1):
        shift = timedelta(weeks=week)
        baselines.append(sums(start - shift, end - shift))
    with_data = [baseline for baseline in baselines if baseline]
    expected: dict = defaultdict(int)
    for baseline in with_data:
        for value, cost in baseline.items():
            expected[value] += cost
    return actual, {value: round(cost / len(with_data)) for value, cost in expected.items()}


def _by_child_tenant(tenant: Tenant, per_tenant: dict[int, int]) -> dict[str, int]:
    """Costs per descendant, summed per direct child's subtree (the tenant's own usage under its slug)."""
    parents = dict(Tenant.objects.filter(id__in=per_tenant).values_list("id", "parent_id"))
    slugs = dict(Tenant.objects.filter(Q(parent_id=tenant.pk) | Q(pk=tenant.pk)).values_list("id", "slug"))
    result: dict[str, int] = defaultdict(int)
    for tenant_id, cost in per_tenant.items():
        current = tenant_id
        while current not in slugs and parents.get(current) is not None:
            if parents[current] not in parents:
                parents.update(Tenant.objects.filter(id=parents[current]).values_list("id", "parent_id"))
            current = parents.get(current)
        result[slugs.get(current, str(tenant_id))] += cost
    return result


def _ranked(dimension: str, actual: dict, expected: dict, sign: int) -> list[dict]:
    if len(set(actual) | set(expected)) < 2:
        return []  # one value (a tenant with one model) explains nothing
    causes = []
    for value in set(actual) | set(expected):
        impact = actual.get(value, 0) - expected.get(value, 0)
        causes.append(
            {
                "dimension": dimension,
                "value": UNTAGGED if value in (None, "") else str(value),
                "actual_nanos": actual.get(value, 0),
                "expected_nanos": expected.get(value, 0),
                "impact_nanos": impact,
            }
        )
    moving = [cause for cause in causes if sign * cause["impact_nanos"] > 0]
    total = sum(abs(cause["impact_nanos"]) for cause in moving)
    for cause in moving:
        cause["share"] = round(abs(cause["impact_nanos"]) / total, 4) if total else 0.0
    moving.sort(key=lambda cause: -abs(cause["impact_nanos"]))
    return moving[:ROOT_CAUSES_PER_DIMENSION]


# --- alert rule metrics --------------------------------------------------------------------------------

_METRIC_SUMS = (
    "requests",
    "unpriced_requests",
    "uncached_input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "cost_nanos",
    "latency_count",
    "latency_ms_sum",
    *LATENCY_BUCKET_FIELDS,
)


def alert_rule_metric(rule: AlertRule, *, start: datetime, end: datetime) -> Decimal | None:
    """The rule's metric over the rollup hours in [start, end), in the rule's unit; None where it
    is undefined (no requests for a rate or a latency, no tokens for a cost per token)."""
    tenant_ids = tenant_descendant_ids(rule.tenant_id) if rule.include_descendants else [rule.tenant_id]
    rollups = UsageRollupHourly.objects.filter(tenant_id__in=tenant_ids, hour__gte=start, hour__lt=end)
    if rule.feature:
        rollups = rollups.filter(feature=rule.feature)
    if rule.model:
        rollups = rollups.filter(model=rule.model)
    sums = {
        name: value or 0
        for name, value in rollups.aggregate(**{name: Sum(name) for name in _METRIC_SUMS}).items()
    }
    errors = 0
    if rule.metric == AlertRule.Metric.ERROR_RATE:
        errors = rollups.filter(status="error").aggregate(total=Sum("requests"))["total"] or 0
    return metric_value(rule.metric, sums, errors)


def metric_value(metric: str, sums: dict[str, int], error_requests: int = 0) -> Decimal | None:
    """A metric from rollup sums (see `_METRIC_SUMS`), in the unit of AlertRule's docstring."""
    tokens = sum(
        sums[name]
        for name in ("uncached_input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
    )
    if metric == AlertRule.Metric.COST:
        return Decimal(sums["cost_nanos"]).scaleb(-9)
    if metric == AlertRule.Metric.TOKENS:
        return Decimal(tokens)
    if metric == AlertRule.Metric.REQUESTS:
        return Decimal(sums["requests"])
    if metric == AlertRule.Metric.UNPRICED_REQUESTS:
        return Decimal(sums["unpriced_requests"])
    if metric == AlertRule.Metric.ERROR_RATE:
        return Decimal(error_requests) / Decimal(sums["requests"]) if sums["requests"] else None
    if metric == AlertRule.Metric.COST_PER_1K_TOKENS:
        return Decimal(sums["cost_nanos"] * 1000).scaleb(-9) / Decimal(tokens) if tokens else None
    if metric == AlertRule.Metric.AVERAGE_LATENCY:
        return (
            Decimal(sums["latency_ms_sum"]) / Decimal(sums["latency_count"])
            if sums["latency_count"]
            else None
        )
    if metric == AlertRule.Metric.P95_LATENCY:
        return latency_quantile([sums[name] for name in LATENCY_BUCKET_FIELDS], 0.95)
    raise ValueError(f"unknown metric {metric!r}")


def latency_quantile(buckets: list[int], quantile: float) -> Decimal | None:
    """A latency quantile (ms) from the rollups' histogram, interpolated linearly inside its bucket
    (as Prometheus' histogram_quantile does); the open last bucket answers its lower bound."""
    count = sum(buckets)
    if not count:
        return None
    rank = quantile * count
    seen = 0
    for index, in_bucket in enumerate(buckets):
        if seen + in_bucket >= rank and in_bucket:
            if index >= len(LATENCY_BUCKET_BOUNDS_MS):
                return Decimal(LATENCY_BUCKET_BOUNDS_MS[-1])
            lower = LATENCY_BUCKET_BOUNDS_MS[index - 1] if index else 0
            upper = LATENCY_BUCKET_BOUNDS_MS[index]
            return Decimal(lower) + Decimal(upper - lower) * Decimal(rank - seen) / Decimal(in_bucket)
        seen += in_bucket
    return Decimal(LATENCY_BUCKET_BOUNDS_MS[-1])
