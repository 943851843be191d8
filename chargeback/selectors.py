"""Reads for usage. Every read for a caller is scoped to what the caller may see."""

from datetime import datetime

from django.db.models import Count, Sum
from django.db.models.functions import TruncHour

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
