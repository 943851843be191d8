"""Small helpers shared by the usage tests."""

from django.db.models import Sum

from chargeback.models import UsageRecord, UsageRollupHourly

ROLLUP_TOTAL_FIELDS = (
    "requests",
    "unpriced_requests",
    "uncached_input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "list_cost_nanos",
    "cost_nanos",
    "latency_ms_sum",
)


def usage_record(event_id, **fields):
    record = {
        "event_id": event_id,
        "timestamp": "2026-03-02T10:15:00Z",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1200,
        "output_tokens": 300,
        "latency_ms": 850,
        "tags": {"feature": "search"},
    }
    record.update(fields)
    return record


def ledger_totals():
    """Everything a resend must not change: record count and sums, and the rollup sums."""
    records = UsageRecord.objects.aggregate(
        count=Sum(1), cost=Sum("cost_nanos"), output=Sum("output_tokens"), input=Sum("uncached_input_tokens")
    )
    rollups = UsageRollupHourly.objects.aggregate(**{name: Sum(name) for name in ROLLUP_TOTAL_FIELDS})
    return records, rollups


def rollup_snapshot():
    fields = ("tenant_id", "hour", "provider", "model", "feature", "status")
    values = [field.attname for field in UsageRollupHourly._meta.fields if field.name != "id"]
    return sorted(
        (tuple(row[name] for name in fields), row) for row in UsageRollupHourly.objects.values(*values)
    )
