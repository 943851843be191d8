"""`prompt_hash` on usage records: accepted and validated by the ingestion (the PostgreSQL COPY path
and the SQLite path both store it), part of what a resend must repeat, read from an OTLP span
attribute, shown and filtered on the usage list."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from chargeback.models import UsageRecord
from chargeback.otlp import otlp_traces_ingest
from chargeback.services import usage_records_ingest
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SHA = "sha256:" + "ab" * 32


@pytest.fixture
def tenant():
    return TenantFactory(slug="search")


def record(event_id="e1", **fields):
    return {
        "event_id": event_id,
        "timestamp": (NOW - timedelta(hours=1)).isoformat(),
        "tenant": "search",
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1200,
        "output_tokens": 300,
        **fields,
    }


def ingest(*records):
    return usage_records_ingest(
        items=[json.dumps(item).encode() for item in records], scope_tenant_ids=None, now=NOW
    )


def test_prompt_hash_is_stored_and_optional(tenant):
    result = ingest(record("a", prompt_hash=SHA), record("b"), record("c", prompt_hash="faq_17-v2"))
    assert result.accepted == 3, result.errors
    stored = dict(UsageRecord.objects.values_list("event_id", "prompt_hash"))
    assert stored == {"a": SHA, "b": None, "c": "faq_17-v2"}


@pytest.mark.parametrize("value", ["", "x" * 129, "has space", "semi;colon", "ü", 17, None])
def test_invalid_prompt_hashes_are_rejected_per_record(tenant, value):
    if value is None:
        result = ingest(record("ok", prompt_hash="h"), {**record("bad"), "prompt_hash": None})
        assert result.accepted == 2  # null is the same as absent
        return
    result = ingest(record("ok", prompt_hash="x" * 128), record("bad", prompt_hash=value))
    assert (result.accepted, result.rejected) == (1, 1)
    assert result.errors[0]["event_id"] == "bad"
    assert result.errors[0]["code"] in ("invalid_value", "invalid_type")


def test_a_resend_must_repeat_the_prompt_hash(tenant):
    assert ingest(record("a", prompt_hash="h1"), record("b")).accepted == 2
    again = ingest(record("a", prompt_hash="h1"), record("b"))
    assert (again.duplicates, again.conflicts) == (2, 0)
    changed = ingest(record("a", prompt_hash="h2"), record("b", prompt_hash="h3"), record("a2"))
    assert (changed.accepted, changed.conflicts) == (1, 2)
    assert dict(UsageRecord.objects.values_list("event_id", "prompt_hash")) == {
        "a": "h1",
        "b": None,
        "a2": None,
    }


def test_otlp_spans_carry_the_prompt_hash_attribute(tenant):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests")
    start = int((NOW - timedelta(hours=1)).timestamp()) * 10**9
    attributes = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
        "chargeback.tenant": "search",
    }
    for index, value in enumerate([SHA, "bad value!", None]):
        extra = {} if value is None else {"chargeback.prompt_hash": value}
        span = tracer.start_span(
            "chat", kind=SpanKind.CLIENT, attributes={**attributes, **extra}, start_time=start
        )
        span.end(end_time=start + (index + 1) * 10**6)
    request = encode_spans(memory.get_finished_spans())
    result = otlp_traces_ingest(request=request, scope_tenant_ids=None, default_tenant_id=None, now=NOW)
    assert result.ingest.accepted == 3 and result.rejected == 0
    # An unusable digest is dropped (like an implausible latency), never the cost of the call.
    assert sorted(UsageRecord.objects.values_list("prompt_hash", flat=True), key=str) == [None, None, SHA]
    provider.shutdown()


def test_usage_list_shows_and_filters_by_prompt_hash(client_for, tenant):
    ingest(record("a", prompt_hash="h1"), record("b", prompt_hash="h2"), record("c", prompt_hash="h1"))
    client = client_for(tenant, scopes=["read"])
    rows = client.get("/api/v1/usage/", {"prompt_hash": "h1"}).json()["results"]
    assert sorted(row["event_id"] for row in rows) == ["a", "c"]
    assert {row["prompt_hash"] for row in rows} == {"h1"}
