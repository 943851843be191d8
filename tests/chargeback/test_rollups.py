import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from chargeback.models import UsageRecord, UsageRollupHourly
from chargeback.selectors import usage_rollups_mismatched_hours
from chargeback.services import usage_records_ingest, usage_rollups_rebuild
from chargeback.tasks import usage_rollups_verify_recent
from tests.chargeback.helpers import rollup_snapshot
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def _random_records(count, seed=7):
    rng = random.Random(seed)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    models = [
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5"),
        ("x", "mystery"),
    ]
    records = []
    for index in range(count):
        provider, model = rng.choice(models)
        input_tokens = rng.randint(0, 300_000)
        cached = rng.randint(0, input_tokens // 2)
        output = rng.randint(0, 4000)
        record = {
            "event_id": f"r{index}",
            "timestamp": (start + timedelta(minutes=rng.randint(0, 60 * 24 * 3))).isoformat(),
            "tenant": rng.choice(["a", "b"]),
            "provider": provider,
            "model": model,
            "input_tokens": input_tokens,
            "cached_input_tokens": cached,
            "output_tokens": output,
            "reasoning_tokens": rng.randint(0, output),
            "status": rng.choice(["ok", "ok", "ok", "error"]),
            "tags": {"feature": rng.choice(["search", "chat", "summarize"])} if rng.random() < 0.8 else {},
        }
        if rng.random() < 0.9:
            record["latency_ms"] = rng.randint(10, 90_000)
        records.append(json.dumps(record).encode())
    return records


def test_rebuild_from_raw_records_equals_incremental_rollups():
    TenantFactory(slug="a")
    TenantFactory(slug="b")
    records = _random_records(600)
    # Incremental: overlapping batches with resends.
    for start in range(0, 600, 100):
        usage_records_ingest(items=records[start : start + 150], scope_tenant_ids=None)
    assert UsageRecord.objects.count() == 600
    incremental = rollup_snapshot()
    assert sum(row["requests"] for _, row in incremental) == 600
    UsageRollupHourly.objects.all().delete()
    usage_rollups_rebuild(start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 6, 1, tzinfo=UTC))
    assert rollup_snapshot() == incremental


def test_the_rebuild_command_and_the_verifier_repair_damaged_hours():
    TenantFactory(slug="a")
    TenantFactory(slug="b")
    usage_records_ingest(items=_random_records(200, seed=3), scope_tenant_ids=None)
    good = rollup_snapshot()
    damaged = UsageRollupHourly.objects.order_by("hour").first()
    damaged.cost_nanos += 1
    damaged.save()
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC)
    assert usage_rollups_mismatched_hours(start=start, end=end) == [damaged.hour]
    call_command("rebuild_rollups", "--from", "2026-03-01", "--to", "2026-03-05")
    assert usage_rollups_mismatched_hours(start=start, end=end) == []
    assert rollup_snapshot() == good


def test_the_periodic_verifier_rebuilds_recent_hours_that_disagree(settings):
    TenantFactory(slug="a")
    now = datetime.now(UTC)
    record = {"event_id": "recent", "timestamp": (now - timedelta(hours=2)).isoformat(), "tenant": "a",
              "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5}  # fmt: skip
    usage_records_ingest(items=[json.dumps(record).encode()], scope_tenant_ids=None)
    UsageRollupHourly.objects.all().delete()
    assert usage_rollups_verify_recent() == 1
    assert UsageRollupHourly.objects.get().requests == 1
    assert usage_rollups_verify_recent() == 0
