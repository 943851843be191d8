import json
from datetime import UTC, datetime, timedelta

import pytest

from chargeback.services import usage_records_ingest

# A Wednesday, at ten past the hour: detection runs a few minutes after each hour.
NOW = datetime(2026, 11, 18, 12, 10, tzinfo=UTC)


def record(
    tenant: str,
    at: datetime,
    cost_usd: float,
    *,
    feature: str = "chat",
    model: str = "in-house-model",
    **tags,
):
    """One call of an unpriced model with a client-reported cost: exact, chosen amounts."""
    return {
        "event_id": f"{tenant}-{feature}-{model}-{at.isoformat()}-{json.dumps(tags, sort_keys=True)}",
        "timestamp": at.isoformat(),
        "tenant": tenant,
        "provider": "acme",
        "model": model,
        "input_tokens": 100,
        "output_tokens": 50,
        "cost_usd": f"{cost_usd:.6f}",
        "tags": {"feature": feature, **tags},
    }


@pytest.fixture
def ingest():
    """Store records (dicts from `record`) through the real ingestion path, rollups included."""

    def store(records: list[dict], now: datetime | None = None):
        latest = max(datetime.fromisoformat(item["timestamp"]) for item in records)
        now = now or max(NOW, latest + timedelta(minutes=1))
        for start in range(0, len(records), 5000):
            result = usage_records_ingest(
                items=[json.dumps(item).encode() for item in records[start : start + 5000]],
                scope_tenant_ids=None,
                now=now,
            )
            assert result.rejected == 0 and result.conflicts == 0, result.errors

    return store


def hourly_usage(
    tenant: str, *, days: int, end: datetime, features: dict[str, float], seed: int = 1
) -> list[dict]:
    """A record per feature and hour for `days` days before `end`: a working-day curve, quiet
    weekends, Monday peaks and a little noise, scaled so that `features` gives each feature's
    mean hourly spend (USD)."""
    import numpy as np

    from tests.insights.series import hourly_series

    first = end - timedelta(days=days)
    first = first.replace(minute=0, second=0, microsecond=0)
    records = []
    for offset, (feature, mean) in enumerate(features.items()):
        # The synthetic curve starts on a Monday; shift it to the real weekday of `first`.
        shift = first.weekday() * 24 + first.hour
        curve = hourly_series(days + 8, base=1.0, seed=seed + offset)[shift : shift + days * 24]
        curve = curve / np.mean(curve) * mean
        for hour, amount in enumerate(curve):
            at = first + timedelta(hours=hour)
            if at >= end:
                break
            records.append(record(tenant, at + timedelta(minutes=7), float(amount), feature=feature))
    return records
