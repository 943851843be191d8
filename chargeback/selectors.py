"""Reads for usage. Every read for a caller is scoped to what the caller may see."""

from datetime import datetime

from django.db.models import Count, Sum
from django.db.models.functions import TruncHour

from chargeback.calendar import ceil_hour, floor_hour
from chargeback.models import UsageRecord, UsageRollupHourly


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
