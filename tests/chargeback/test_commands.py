import csv
import gzip
import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from chargeback.models import PricingSource, RerateAudit, UsageRecord, UsageRollupHourly
from tests.chargeback.helpers import ledger_totals, usage_record
from tests.factories import PriceOverrideFactory, TenantFactory

pytestmark = pytest.mark.django_db


def _run(*args):
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_import_jsonl_gz_twice_changes_nothing_the_second_time(tmp_path):
    TenantFactory(slug="team")
    path = tmp_path / "usage.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        for index in range(25):
            handle.write(json.dumps(usage_record(f"imp-{index}", tenant="team")) + "\n")
        handle.write("{not json}\n")
    first = _run("import_usage", str(path), "--batch-size", "7")
    assert "25 accepted" in first and "1 rejected" in first
    before = ledger_totals()
    second = _run("import_usage", str(path), "--batch-size", "10")
    assert "0 accepted, 25 duplicates" in second
    assert ledger_totals() == before
    assert set(UsageRecord.objects.values_list("source", flat=True)) == {"import"}


def test_import_csv_with_tag_columns_and_a_default_tenant(tmp_path):
    TenantFactory(slug="team")
    path = tmp_path / "usage.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event_id", "timestamp", "provider", "model", "input_tokens", "output_tokens",
                         "cached_input_tokens", "latency_ms", "tag.feature", "tag.customer"])  # fmt: skip
        writer.writerow(
            ["c1", "2026-03-02T10:00:00Z", "openai", "gpt-4o", "1000", "100", "200", "700", "chat", ""]
        )
        writer.writerow(
            ["c2", "2026-03-02T10:05:00Z", "openai", "gpt-4o", "oops", "100", "", "", "chat", "acme"]
        )
    output = _run("import_usage", str(path), "--tenant", "team")
    assert "1 accepted" in output and "1 rejected" in output
    record = UsageRecord.objects.get()
    assert record.tags == {"feature": "chat"}
    assert (record.uncached_input_tokens, record.cached_input_tokens, record.latency_ms) == (800, 200, 700)


def test_import_rejects_unknown_files_and_tenants(tmp_path):
    with pytest.raises(CommandError):
        _run("import_usage", str(tmp_path / "missing.jsonl"))
    path = tmp_path / "x.jsonl"
    path.write_text("")
    with pytest.raises(CommandError):
        _run("import_usage", str(path), "--tenant", "ghost")


def test_rerate_applies_a_new_override_and_is_audited():
    org = TenantFactory(slug="org", time_zone="Europe/Berlin")
    TenantFactory(slug="team", parent=org)
    _ingest([usage_record("in-march", tenant="team", timestamp="2026-03-10T12:00:00Z"),
             usage_record("in-april", tenant="team", timestamp="2026-04-10T12:00:00Z"),
             # 23:30 UTC on 31 March is already 1 April in Berlin: outside a March re-rate.
             usage_record("berlin-april", tenant="team", timestamp="2026-03-31T23:30:00Z")])  # fmt: skip
    before = {record.event_id: record.cost_nanos for record in UsageRecord.objects.all()}
    PriceOverrideFactory(model="gpt-4o", tenant=org, input_per_mtok=1, output_per_mtok=1)
    output = _run("rerate", "--tenant", "org", "--from", "2026-03-01", "--to", "2026-04-01")
    assert "Re-rated 1 records" in output
    march = UsageRecord.objects.get(event_id="in-march")
    assert (march.cost_nanos, march.pricing_source) == (1500 * 1000, PricingSource.OVERRIDE)
    assert UsageRecord.objects.get(event_id="in-april").cost_nanos == before["in-april"]
    assert UsageRecord.objects.get(event_id="berlin-april").cost_nanos == before["berlin-april"]
    audit = RerateAudit.objects.get()
    assert (audit.records, audit.cost_nanos_before, audit.cost_nanos_after) == (
        1,
        before["in-march"],
        1_500_000,
    )
    assert audit.period_start == datetime(2026, 2, 28, 23, tzinfo=UTC)
    rollup = UsageRollupHourly.objects.get(hour=datetime(2026, 3, 10, 12, tzinfo=UTC))
    assert rollup.cost_nanos == 1_500_000


def _ingest(records):
    from chargeback.services import usage_records_ingest

    result = usage_records_ingest(
        items=[json.dumps(record).encode() for record in records], scope_tenant_ids=None
    )
    assert result.accepted == len(records), result.errors
