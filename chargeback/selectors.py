"""Reads for usage. Every read for a caller is scoped to what the caller may see."""

import operator
from collections.abc import Sequence
from datetime import datetime
from functools import reduce
from zoneinfo import ZoneInfo

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour

from chargeback.calendar import ceil_hour, floor_hour
from chargeback.models import Statement, UsageRecord, UsageRollupHourly
from tenants.models import Tenant
from tenants.selectors import tenant_descendant_ids


def usage_record_list(*, principal):
    return UsageRecord.objects.visible_to(principal).select_related("tenant")


def usage_rollups_mismatched_hours(*, start: datetime, end: datetime) -> list[datetime]:
    """UTC hours in [start, end) whose rollup request and cost totals differ from the raw records."""
    raw = {
        (row["hour"], row["tenant_id"]): (row["requests"], row["cost"] or 0)
        for row in UsageRecord.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        .annotate(hour=TruncHour("occurred_at"))
        .values("hour", "tenant_id")
        .annotate(requests=Count("id"), cost=Sum("cost_nanos"))
    }
    rolled = {
        (row["hour"], row["tenant_id"]): (row["requests"], row["cost"] or 0)
        for row in UsageRollupHourly.objects.filter(hour__gte=start, hour__lt=end)
        .values("hour", "tenant_id")
        .annotate(requests=Sum("requests"), cost=Sum("cost_nanos"))
    }
    return sorted({key[0] for key in raw.keys() | rolled.keys() if raw.get(key) != rolled.get(key)})


def usage_cost_between(
    *,
    tenant_ids: list[int],
    start: datetime,
    end: datetime,
    provider: str = "",
    model_id: str = "",
    tag_key: str = "",
    tag_value: str = "",
) -> int:
    """Charged cost (nanos) of the tenants' usage in [start, end), exact for any period edges.

    Whole UTC hours come from the hourly rollups. Edges that are not on the hour (time zones with
    half-hour offsets) and tags other than `feature`, which rollups do not carry, come from the raw
    records. Unpriced records count zero here; they are counted and alerted on separately.
    """
    if not tenant_ids or end <= start:
        return 0
    raw = UsageRecord.objects.filter(tenant_id__in=tenant_ids)
    rollups = UsageRollupHourly.objects.filter(tenant_id__in=tenant_ids)
    if provider:
        raw, rollups = raw.filter(provider=provider), rollups.filter(provider=provider)
    if model_id:
        raw, rollups = raw.filter(model_id=model_id), rollups.filter(model=model_id)
    if tag_key:
        raw = raw.filter(**{f"tags__{tag_key}": tag_value})
        if tag_key != "feature":
            return _sum_cost(raw.filter(occurred_at__gte=start, occurred_at__lt=end))
        rollups = rollups.filter(feature=tag_value)
    first_hour, last_hour = ceil_hour(start), floor_hour(end)
    if first_hour >= last_hour:
        return _sum_cost(raw.filter(occurred_at__gte=start, occurred_at__lt=end))
    total = (
        rollups.filter(hour__gte=first_hour, hour__lt=last_hour).aggregate(total=Sum("cost_nanos"))["total"]
        or 0
    )
    if start < first_hour:
        total += _sum_cost(raw.filter(occurred_at__gte=start, occurred_at__lt=first_hour))
    if last_hour < end:
        total += _sum_cost(raw.filter(occurred_at__gte=last_hour, occurred_at__lt=end))
    return total


def _sum_cost(queryset) -> int:
    return queryset.aggregate(total=Sum("cost_nanos"))["total"] or 0


# --- statements ----------------------------------------------------------------------------------


def statement_tenant_ids(tenant_id: int) -> list[int]:
    """The tenants a billable tenant's statement covers: its subtree, less the subtrees of billable
    tenants below it (they get statements of their own)."""
    subtree = set(tenant_descendant_ids(tenant_id))
    billable_below = list(
        Tenant.objects.filter(id__in=subtree, is_billable=True)
        .exclude(id=tenant_id)
        .values_list("id", flat=True)
    )
    if billable_below:
        subtree -= set(tenant_descendant_ids(*billable_below))
    return sorted(subtree)


_USAGE_SUM_FIELDS = (
    "requests",
    "unpriced_requests",
    "uncached_input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "list_cost_nanos",
    "cost_nanos",
)


def usage_totals(*, tenant_ids: list[int], start: datetime, end: datetime, group_by: tuple[str, ...]) -> dict:
    """Sums of usage in [start, end) grouped by rollup dimensions (tenant_id, provider, model,
    feature, status): whole hours from the rollups, partial edge hours from the raw records.

    Returns {group key tuple: {field: sum}} with the fields of _USAGE_SUM_FIELDS.
    """
    return usage_totals_many(scopes=[(tenant_ids, start, end)], group_by=group_by)


# Tenant ids per query of usage_totals_many (SQLite caps the parameters of one statement).
_TOTALS_IDS_PER_QUERY = 10_000


def usage_totals_many(
    *, scopes: Sequence[tuple[list[int], datetime, datetime]], group_by: tuple[str, ...]
) -> dict:
    """usage_totals of several scopes (tenant_ids, start, end) with disjoint tenant sets, added up:
    e.g. the statements of many tenants whose months start at different UTC moments. One query for
    the whole hours of every scope (rollups) and one for the partial edge hours of the scopes that
    have some (raw records), whatever the number of scopes (up to _TOTALS_IDS_PER_QUERY tenants)."""
    totals: dict[tuple, dict[str, int]] = {}

    def add(key, values):
        bucket = totals.setdefault(key, dict.fromkeys(_USAGE_SUM_FIELDS, 0))
        for name in _USAGE_SUM_FIELDS:
            bucket[name] += values.get(name) or 0

    rollup_parts: list[tuple[list[int], Q]] = []
    raw_parts: list[tuple[list[int], Q]] = []
    for tenant_ids, start, end in scopes:
        if not tenant_ids or end <= start:
            continue
        first_hour, last_hour = ceil_hour(start), floor_hour(end)
        whole_hours = first_hour < last_hour
        edges = [(start, first_hour), (last_hour, end)] if whole_hours else [(start, end)]
        for index in range(0, len(tenant_ids), _TOTALS_IDS_PER_QUERY):
            chunk = list(tenant_ids[index : index + _TOTALS_IDS_PER_QUERY])
            if whole_hours:
                rollup_parts.append((chunk, Q(tenant_id__in=chunk, hour__gte=first_hour, hour__lt=last_hour)))
            raw_parts.extend(
                (chunk, Q(tenant_id__in=chunk, occurred_at__gte=edge_start, occurred_at__lt=edge_end))
                for edge_start, edge_end in edges
                if edge_start < edge_end
            )
    for condition in _or_batches(rollup_parts):
        rows = (
            UsageRollupHourly.objects.filter(condition)
            .values(*group_by)
            .annotate(**{name: Sum(name) for name in _USAGE_SUM_FIELDS})
        )
        for row in rows:
            add(tuple(row[name] for name in group_by), row)
    raw_names = {"tenant_id": "tenant_id", "provider": "provider", "model": "model_id", "status": "status"}
    for condition in _or_batches(raw_parts):
        records = UsageRecord.objects.filter(condition)
        for record in records.values(*[raw_names.get(name, "tags") for name in group_by], *_RAW_SUMS):
            key = tuple(
                (record["tags"] or {}).get("feature", "") if name == "feature" else record[raw_names[name]]
                for name in group_by
            )
            add(
                key,
                {
                    **{name: record[name] for name in _RAW_SUMS},
                    "requests": 1,
                    "unpriced_requests": int(record["cost_nanos"] is None),
                },
            )
    return totals


def _or_batches(parts: list[tuple[list[int], Q]]):
    """The conditions OR-ed together, as few queries as the tenant ids per query allow."""
    batch: list[Q] = []
    size = 0
    for tenant_ids, condition in parts:
        if batch and size + len(tenant_ids) > _TOTALS_IDS_PER_QUERY:
            yield reduce(operator.or_, batch)
            batch, size = [], 0
        batch.append(condition)
        size += len(tenant_ids)
    if batch:
        yield reduce(operator.or_, batch)


_RAW_SUMS = (
    "uncached_input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "list_cost_nanos",
    "cost_nanos",
)


def usage_daily_cost(*, tenant_ids: list[int], start: datetime, end: datetime, time_zone: str) -> list[tuple]:
    """(local date, cost nanos) for each day of [start, end) in the zone, from the rollups (hours
    are attributed to the local day they start in)."""
    days: dict = {}
    zone = ZoneInfo(time_zone)
    rows = (
        UsageRollupHourly.objects.filter(tenant_id__in=tenant_ids, hour__gte=floor_hour(start), hour__lt=end)
        .values("hour")
        .annotate(cost=Sum("cost_nanos"))
    )
    for row in rows:
        day = row["hour"].astimezone(zone).date()
        days[day] = days.get(day, 0) + (row["cost"] or 0)
    return sorted(days.items())


def statement_list(*, principal):
    return Statement.objects.visible_to(principal).select_related("tenant")
