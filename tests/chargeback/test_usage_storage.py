"""The ingest write path (a COPY straight into the table on PostgreSQL, with a staging table and
ON CONFLICT when a concurrent batch got there first; plain inserts on SQLite): the rollups written
at ingest must equal a rebuild from the stored records, latency histogram edges and unpriced
records included."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import ProtectedError

from chargeback import services, usage_storage
from chargeback.models import LATENCY_BUCKET_BOUNDS_MS, UsageRecord, UsageRollupHourly
from chargeback.services import usage_records_ingest, usage_rollups_rebuild
from tests.chargeback.helpers import rollup_snapshot, usage_record
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def _edge_records():
    latencies = [
        None,
        0,
        1,
        *LATENCY_BUCKET_BOUNDS_MS,
        *(bound + 1 for bound in LATENCY_BUCKET_BOUNDS_MS),
        10**6,
    ]
    records = []
    for index, latency in enumerate(latencies):
        fields = {
            "tenant": ("plain", "marked-up")[index % 2],
            "timestamp": f"2026-03-02T{10 + index % 3:02d}:{index % 60:02d}:00Z",
            "status": ("ok", "ok", "error")[index % 3],
            "model": ("gpt-4o", "gpt-4o-mini", "no-such-model")[index % 3],
            "cached_input_tokens": index * 3,
            "tags": {"feature": "search"} if index % 4 else {"customer": "acme"},
        }
        record = usage_record(f"edge-{index}", **fields)
        if latency is None:
            del record["latency_ms"]
        else:
            record["latency_ms"] = latency
        records.append(json.dumps(record).encode())
    return records


def test_rollups_written_at_ingest_equal_a_rebuild_from_the_records():
    TenantFactory(slug="plain")
    TenantFactory(slug="marked-up", markup_percent=Decimal("12.5"))
    records = _edge_records()
    first = usage_records_ingest(items=records[:20], scope_tenant_ids=None)
    # A batch overlapping the first: the resent records are duplicates and are not summed again.
    second = usage_records_ingest(items=records[10:], scope_tenant_ids=None)
    assert (first.accepted, second.accepted, second.duplicates) == (20, len(records) - 20, 10)
    assert first.unpriced + second.unpriced == sum(b'"no-such-model"' in record for record in records)

    at_ingest = rollup_snapshot()
    assert sum(row["requests"] for _, row in at_ingest) == len(records) == UsageRecord.objects.count()
    assert sum(row["latency_count"] for _, row in at_ingest) == len(records) - 1
    UsageRollupHourly.objects.all().delete()
    usage_rollups_rebuild(start=datetime(2026, 3, 1, tzinfo=UTC), end=datetime(2026, 3, 3, tzinfo=UTC))
    assert rollup_snapshot() == at_ingest


def test_a_batch_with_stored_keys_reports_only_those_and_sums_nothing_twice():
    """PostgreSQL COPYs a batch straight into the table; a key stored already (a resend, or a
    concurrent batch's) makes the COPY fail on the unique index, and the batch must then go through
    the ON CONFLICT path: the resend and the conflict reported, the new rows stored, nothing
    summed twice. SQLite inserts with ON CONFLICT in the first place; both must agree."""
    TenantFactory(slug="plain")
    stored = [json.dumps(usage_record(f"e{index}", tenant="plain")).encode() for index in range(3)]
    usage_records_ingest(items=stored, scope_tenant_ids=None)
    changed = json.dumps(usage_record("e1", tenant="plain", output_tokens=999)).encode()
    # "a-new" sorts before the stored "e0": the COPY writes it, then fails, and the savepoint must
    # undo it before the ON CONFLICT path stores it again.
    fresh = [json.dumps(usage_record(f"{first}-new", tenant="plain")).encode() for first in ("a", "z")]
    result = usage_records_ingest(items=[fresh[0], stored[0], changed, fresh[1]], scope_tenant_ids=None)
    assert (result.accepted, result.duplicates, result.conflicts) == (2, 1, 1)
    assert [(error["index"], error["code"]) for error in result.errors] == [(2, "conflict")]
    assert UsageRecord.objects.count() == 5
    at_ingest = rollup_snapshot()
    assert sum(row["requests"] for _, row in at_ingest) == 5
    UsageRollupHourly.objects.all().delete()
    usage_rollups_rebuild(start=datetime(2020, 1, 1, tzinfo=UTC), end=datetime(2030, 1, 1, tzinfo=UTC))
    assert rollup_snapshot() == at_ingest


def test_a_batch_for_a_tenant_that_no_longer_exists_stores_nothing():
    """The table has no foreign key constraint (its per-row check is the slow part of concurrent
    ingestion); the batch's tenants are checked, and locked, once instead."""
    tenant = TenantFactory(slug="plain")
    usage_records_ingest(
        items=[json.dumps(usage_record("kept", tenant="plain")).encode()], scope_tenant_ids=None
    )
    row = UsageRecord.objects.values_list(*usage_storage.USAGE_COLUMNS).get()
    gone = list(row)
    gone[0], gone[1] = tenant.pk + 1000, "orphan"
    fresh = list(row)
    fresh[1] = "fresh"
    with pytest.raises(usage_storage.TenantGoneError), transaction.atomic():
        usage_storage.usage_rows_store([tuple(fresh), tuple(gone)])
    assert list(UsageRecord.objects.values_list("event_id", flat=True)) == ["kept"]
    assert sum(UsageRollupHourly.objects.values_list("requests", flat=True)) == 1


def test_a_tenant_with_usage_cannot_be_deleted():
    tenant = TenantFactory(slug="plain")
    usage_records_ingest(
        items=[json.dumps(usage_record("e1", tenant="plain")).encode()], scope_tenant_ids=None
    )
    with pytest.raises(ProtectedError):
        tenant.delete()


def test_records_of_a_tenant_deleted_during_ingestion_are_rejected_and_the_others_stored(monkeypatch):
    TenantFactory(slug="plain")
    doomed = TenantFactory(slug="doomed")
    lock = services.usage_tenants_lock

    def delete_first(tenant_ids):
        # The tenant (without usage, so PROTECT allows it) goes after validation, before the lock.
        doomed.delete()
        return lock(tenant_ids)

    monkeypatch.setattr(services, "usage_tenants_lock", delete_first)
    items = [
        json.dumps(usage_record("a", tenant="plain")).encode(),
        json.dumps(usage_record("b", tenant="doomed")).encode(),
        json.dumps(usage_record("c", tenant="plain")).encode(),
        json.dumps(usage_record("b", tenant="doomed")).encode(),  # a repeat goes with it
    ]
    result = usage_records_ingest(items=items, scope_tenant_ids=None)
    assert (result.accepted, result.rejected, result.duplicates) == (2, 2, 0)
    assert [(error["index"], error["event_id"], error["code"]) for error in result.errors] == [
        (1, "b", "unknown_tenant"),
        (3, "b", "unknown_tenant"),
    ]
    assert sorted(UsageRecord.objects.values_list("event_id", flat=True)) == ["a", "c"]
    assert sum(UsageRollupHourly.objects.values_list("requests", flat=True)) == 2
