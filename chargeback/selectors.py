"""Reads for usage. Every read for a caller is scoped to what the caller may see."""

from datetime import datetime
from zoneinfo import ZoneInfo

from django.db.models import Count, Sum
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
    totals: dict[tuple, dict[str, int]] = {}
    if not tenant_ids or end <= start:
        return totals

    def add(key, values):
        bucket = totals.setdefault(key, dict.fromkeys(_USAGE_SUM_FIELDS, 0))
        for name in _USAGE_SUM_FIELDS:
            bucket[name] += values.get(name) or 0

    first_hour, last_hour = ceil_hour(start), floor_hour(end)
    if first_hour < last_hour:
        rows = (
            UsageRollupHourly.objects.filter(
                tenant_id__in=tenant_ids, hour__gte=first_hour, hour__lt=last_hour
            )
            .values(*group_by)
            .annotate(**{name: Sum(name) for name in _USAGE_SUM_FIELDS})
        )
        for row in rows:
            add(tuple(row[name] for name in group_by), row)
        edges = [(start, first_hour), (last_hour, end)]
    else:
        edges = [(start, end)]
    raw_names = {"tenant_id": "tenant_id", "provider": "provider", "model": "model_id", "status": "status"}
    for edge_start, edge_end in edges:
        if edge_start >= edge_end:
            continue
        records = UsageRecord.objects.filter(
            tenant_id__in=tenant_ids, occurred_at__gte=edge_start, occurred_at__lt=edge_end
        )
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
