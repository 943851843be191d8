"""Celery tasks, run by a real worker process on the real broker (filesystem on SQLite, Redis in CI)."""

import json
from datetime import UTC, datetime

import pytest

from chargeback.models import UsageRollupHourly
from chargeback.services import usage_records_ingest
from chargeback.tasks import usage_rollups_rebuild_task
from tests.chargeback.helpers import rollup_snapshot, usage_record
from tests.factories import TenantFactory
from tests.worker import celery_worker, wait_for


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_rebuilds_rollups_from_a_queued_task():
    TenantFactory(slug="team")
    records = [usage_record(f"w{index}", tenant="team", output_tokens=10 * index) for index in range(5)]
    usage_records_ingest(items=[json.dumps(record).encode() for record in records], scope_tenant_ids=None)
    expected = rollup_snapshot()
    UsageRollupHourly.objects.all().delete()

    with celery_worker() as (queue, lines):
        usage_rollups_rebuild_task.apply_async(
            args=[datetime(2026, 3, 1, tzinfo=UTC).isoformat(), datetime(2026, 3, 3, tzinfo=UTC).isoformat()],
            queue=queue,
        )
        wait_for(lambda: UsageRollupHourly.objects.exists(), lines=lines)
    assert rollup_snapshot() == expected
    assert sum(row["requests"] for _, row in expected) == 5
