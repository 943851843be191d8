"""The OTLP/HTTP traces receiver, fed by the OpenTelemetry SDK's own exporter over real HTTP."""

import base64
import gzip
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from genai_prices import Usage, calc_price
from google.protobuf import json_format
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from chargeback import money
from chargeback.models import UsageRecord
from chargeback.otlp import otlp_attribute_mapping
from tests.factories import ApiKeyFactory, TenantFactory

pytestmark = pytest.mark.django_db(transaction=True)

START = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
START_NS = int(START.timestamp()) * 1_000_000_000
PROTOBUF = "application/x-protobuf"

OPENAI_CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.cache_read.input_tokens": 200,
    "chargeback.tenant": "search",
    "customer.id": "globex",
}


@pytest.fixture
def org():
    return TenantFactory(slug="acme", kind="organization")


@pytest.fixture
def team(org):
    return TenantFactory(slug="search", parent=org)


@pytest.fixture
def secret(org, team):
    """An ingest key of the organisation, so spans may name any of its teams."""
    _, raw = ApiKeyFactory.create_with_secret(tenant=org, scopes=["ingest"])
    return raw


@pytest.fixture
def endpoint(live_server):
    return f"{live_server.url}/v1/traces"


class Tracing:
    """A TracerProvider exporting every span at its end, as an instrumented application would."""

    def __init__(self, endpoint, secret, *, export=True, **exporter_options):
        self.exporter = OTLPSpanExporter(
            endpoint=endpoint, headers={"Authorization": f"Bearer {secret}"}, timeout=10, **exporter_options
        )
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "search-api", "deployment.environment.name": "prod"})
        )
        if export:
            self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("chargeback-tests")

    def span(self, attributes, *, name="chat gpt-4o", duration_ms=850, error=False, start_ns=START_NS):
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes, start_time=start_ns)
        if error:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
        span.end(end_time=start_ns + duration_ms * 1_000_000)
        return span

    def spans(self):
        return self.memory.get_finished_spans()

    def shutdown(self):
        self.provider.shutdown()


@pytest.fixture
def tracing(endpoint, secret):
    tracing = Tracing(endpoint, secret)
    yield tracing
    tracing.shutdown()


@pytest.fixture
def recording(endpoint, secret):
    """Spans made by the SDK but not exported, for a test to send them itself."""
    tracing = Tracing(endpoint, secret, export=False)
    yield tracing
    tracing.shutdown()


def event_id(span):
    context = span.get_span_context()
    return f"otlp-{context.trace_id:032x}-{context.span_id:016x}"


def otlp_json(spans) -> dict:
    """An OTLP JSON body for SDK spans: proto3 JSON of the SDK's own encoding, with hex ids."""
    document = json_format.MessageToDict(encode_spans(spans))
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return document


def post(url, body: bytes, *, content_type, secret=None, encoding=None):
    """A plain HTTP POST: (status, headers, body), 4xx and 5xx included."""
    headers = {"Content-Type": content_type}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    if encoding:
        headers["Content-Encoding"] = encoding
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def post_protobuf(url, spans, secret):
    status, headers, body = post(
        url, encode_spans(spans).SerializeToString(), content_type=PROTOBUF, secret=secret
    )
    assert headers["Content-Type"] == PROTOBUF
    return status, headers, ExportTraceServiceResponse.FromString(body) if status == 200 else body


def post_json(url, document, secret, **options):
    body = json.dumps(document).encode()
    if options.get("encoding") == "gzip":
        body = gzip.compress(body)
    status, headers, raw = post(url, body, content_type="application/json", secret=secret, **options)
    assert headers["Content-Type"] == "application/json"
    return status, headers, json.loads(raw)


def test_the_sdk_exporter_stores_genai_spans_and_ignores_the_others(tracing, endpoint, secret, team):
    llm_span = tracing.span({**OPENAI_CHAT, "gen_ai.usage.cost": 0.0045})
    tracing.span({"http.request.method": "GET", "url.path": "/search"}, name="GET /search")
    # A GenAI span without usage (a streamed call that failed before any token) is not billable.
    tracing.span({"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"})

    record = UsageRecord.objects.get()
    assert record.event_id == event_id(llm_span)
    assert record.tenant == team
    assert record.source == "otlp"
    assert (record.provider, record.model) == ("openai", "gpt-4o-2024-08-06")
    assert (record.uncached_input_tokens, record.cached_input_tokens, record.cache_write_tokens) == (
        1000,
        200,
        0,
    )
    assert (record.output_tokens, record.reasoning_tokens) == (300, 0)
    assert record.occurred_at == START
    assert (record.latency_ms, record.status) == (850, "ok")
    assert record.tags == {
        "feature": "search-api",
        "customer": "globex",
        "environment": "prod",
        "operation": "chat",
    }
    # gpt-4o: $2.50/M input, $1.25/M cached input, $10/M output; the client's own figure is kept beside ours.
    assert record.cost_nanos == 1000 * 2500 + 200 * 1250 + 300 * 10000
    assert record.reported_cost_nanos == 4_500_000


def test_a_re_export_is_counted_as_duplicates_and_changes_nothing(tracing, endpoint, secret):
    tracing.span(OPENAI_CHAT)
    tracing.span({"http.request.method": "GET"}, name="GET /")
    before = list(UsageRecord.objects.values())

    assert tracing.exporter.export(tracing.spans()) == SpanExportResult.SUCCESS
    status, headers, response = post_protobuf(endpoint, tracing.spans(), secret)

    assert status == 200
    assert response == ExportTraceServiceResponse()
    assert headers["X-Chargeback-Duplicate-Spans"] == "1"
    assert headers["X-Chargeback-Ignored-Spans"] == "1"
    assert headers["X-Chargeback-Accepted-Spans"] == "0"
    assert list(UsageRecord.objects.values()) == before


def test_gzip_compressed_exports_are_accepted(endpoint, secret, team):
    tracing = Tracing(endpoint, secret, compression=Compression.Gzip)
    try:
        tracing.span(OPENAI_CHAT)
    finally:
        tracing.shutdown()
    assert UsageRecord.objects.get().output_tokens == 300


def test_otlp_json_is_stored_like_protobuf(recording, endpoint, secret, team):
    llm_span = recording.span(OPENAI_CHAT)
    recording.span({"db.system.name": "postgresql"}, name="SELECT")
    document = otlp_json(recording.spans())
    # OTLP JSON allows int64 as numbers as well as strings, and unknown fields.
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["startTimeUnixNano"] = int(spans[0]["startTimeUnixNano"])
    spans[0]["futureField"] = {"anything": True}
    assert spans[0]["kind"] == "SPAN_KIND_CLIENT" or isinstance(spans[0]["kind"], int)
    spans[0]["kind"] = 3  # integer enums, as the OTLP JSON encoding writes them

    status, headers, body = post_json(endpoint, document, secret)
    assert (status, body) == (200, {})
    assert headers["X-Chargeback-Ignored-Spans"] == "1"
    record = UsageRecord.objects.get()
    assert record.event_id == event_id(llm_span)
    assert (record.tenant, record.uncached_input_tokens, record.cached_input_tokens) == (team, 1000, 200)

    status, headers, body = post_json(endpoint, document, secret, encoding="gzip")
    assert (status, body) == (200, {})
    assert headers["X-Chargeback-Duplicate-Spans"] == "1"
    assert UsageRecord.objects.count() == 1


def test_older_attribute_names_of_openllmetry_and_openlit(tracing, team):
    # OpenLLMetry's Anthropic instrumentation: gen_ai.system, llm.request.type, prompt/completion
    # tokens with the cache inside the prompt tokens (it adds Anthropic's cache counts back in).
    openllmetry = tracing.span(
        {
            "gen_ai.system": "Anthropic",
            "llm.request.type": "chat",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.usage.prompt_tokens": 1500,
            "gen_ai.usage.completion_tokens": 400,
            "gen_ai.usage.cache_read_input_tokens": 1000,
            "gen_ai.usage.cache_creation_input_tokens": 200,
            "traceloop.entity.name": "summarize_ticket",
            "tenant.id": "search",
        }
    )
    # OpenLIT: its own cost attribute, older cached and reasoning names.
    openlit = tracing.span(
        {
            "gen_ai.system": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "o3-mini",
            "gen_ai.usage.input_tokens": 800,
            "gen_ai.usage.output_tokens": 500,
            "gen_ai.usage.prompt_tokens_details.cached_tokens": 100,
            "gen_ai.usage.reasoning_tokens": 350,
            "gen_ai.usage.cost": 0.0031,
            "tenant.id": "search",
        }
    )

    anthropic = UsageRecord.objects.get(event_id=event_id(openllmetry))
    assert (anthropic.provider, anthropic.model) == ("anthropic", "claude-sonnet-4-5")
    assert (anthropic.uncached_input_tokens, anthropic.cached_input_tokens, anthropic.cache_write_tokens) == (
        300,
        1000,
        200,
    )
    assert anthropic.output_tokens == 400
    assert anthropic.tags["prompt_template"] == "summarize_ticket"
    assert anthropic.tags["operation"] == "chat"
    expected = calc_price(
        Usage(input_tokens=1500, cache_read_tokens=1000, cache_write_tokens=200, output_tokens=400),
        "claude-sonnet-4-5",
        provider_id="anthropic",
        genai_request_timestamp=START,
    ).total_price
    assert anthropic.cost_nanos == money.usd_to_nanos(expected)

    openai = UsageRecord.objects.get(event_id=event_id(openlit))
    assert (openai.uncached_input_tokens, openai.cached_input_tokens) == (700, 100)
    assert (openai.output_tokens, openai.reasoning_tokens) == (500, 350)
    assert openai.reported_cost_nanos == money.usd_to_nanos(Decimal("0.0031"))
    assert openai.tenant == team


def test_error_status_and_latency_come_from_the_span(tracing):
    tracing.span({**OPENAI_CHAT, "gen_ai.usage.output_tokens": 0}, error=True, duration_ms=12_345)
    record = UsageRecord.objects.get()
    assert (record.status, record.latency_ms) == ("error", 12_345)


def test_parts_larger_than_the_whole_reject_that_span_only(recording, endpoint, secret):
    good = recording.span(OPENAI_CHAT)
    bad = recording.span(
        {**OPENAI_CHAT, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.cache_read.input_tokens": 500}
    )

    status, _, response = post_protobuf(endpoint, recording.spans(), secret)

    assert status == 200
    assert response.partial_success.rejected_spans == 1
    assert event_id(bad) in response.partial_success.error_message
    assert "inconsistent_tokens" in response.partial_success.error_message
    assert list(UsageRecord.objects.values_list("event_id", flat=True)) == [event_id(good)]

    _, _, body = post_json(endpoint, otlp_json([bad]), secret)
    assert body["partialSuccess"]["rejectedSpans"] == "1"
    assert "exceed input_tokens" in body["partialSuccess"]["errorMessage"]


def test_unreadable_attributes_and_foreign_tenants_are_rejected_spans_not_errors(recording, endpoint, secret):
    TenantFactory(slug="elsewhere")  # not below the key's organisation
    recording.span({**OPENAI_CHAT, "gen_ai.usage.input_tokens": "many"})
    recording.span({**OPENAI_CHAT, "gen_ai.usage.output_tokens": -5})
    recording.span({**OPENAI_CHAT, "chargeback.tenant": "elsewhere"})
    recording.span({**OPENAI_CHAT, "gen_ai.usage.cost": "free"})

    status, _, response = post_protobuf(endpoint, recording.spans(), secret)

    assert status == 200
    assert response.partial_success.rejected_spans == 4
    message = response.partial_success.error_message
    assert "invalid_attribute" in message
    assert "tenant_not_allowed" in message
    assert UsageRecord.objects.count() == 0


def test_the_attribute_mapping_is_configurable(tracing, settings, team):
    settings.OTLP_ATTRIBUTE_MAPPING = {
        "tenant": ["app.team"],
        "tag.feature": ["app.feature"],
        "tag.customer": [],
    }
    tracing.span(
        {**OPENAI_CHAT, "chargeback.tenant": "nobody", "app.team": "search", "app.feature": "rerank"}
    )
    record = UsageRecord.objects.get()
    assert record.tenant == team
    assert record.tags == {"feature": "rerank"}


def test_a_malformed_mapping_is_a_configuration_error(settings):
    settings.OTLP_ATTRIBUTE_MAPPING = {"customer": ["customer.id"]}
    with pytest.raises(ImproperlyConfigured, match=r"'tenant' or 'tag\.<key>'"):
        otlp_attribute_mapping()


def test_an_empty_export_is_a_success_with_an_empty_protobuf_response(endpoint, secret):
    status, headers, body = post(endpoint, b"", content_type=PROTOBUF, secret=secret)
    assert (status, body, headers["Content-Type"]) == (200, b"", PROTOBUF)


def test_garbage_is_a_400_with_a_status_in_the_request_encoding(endpoint, secret):
    status, headers, body = post(endpoint, b"\xff\xff\xff not protobuf", content_type=PROTOBUF, secret=secret)
    assert status == 400
    assert headers["Content-Type"] == PROTOBUF
    rpc_status = RpcStatus.FromString(body)
    assert rpc_status.code == 3  # INVALID_ARGUMENT
    assert "protobuf" in rpc_status.message

    status, headers, body = post(endpoint, b"{not json", content_type="application/json", secret=secret)
    assert (status, headers["X-Chargeback-Error-Code"]) == (400, "invalid_otlp_body")
    assert json.loads(body)["code"] == 3

    bad_id = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not-hex", "spanId": "00"}]}]}]}
    status, _, body = post(
        endpoint, json.dumps(bad_id).encode(), content_type="application/json", secret=secret
    )
    assert status == 400
    assert "hex" in json.loads(body)["message"]

    wrong_shape = {"resourceSpans": {"scopeSpans": []}}
    status, _, _ = post(
        endpoint, json.dumps(wrong_shape).encode(), content_type="application/json", secret=secret
    )
    assert status == 400


def test_a_wrong_content_type_is_a_415(endpoint, secret):
    status, headers, body = post(endpoint, b"resourceSpans", content_type="text/plain", secret=secret)
    assert (status, headers["Content-Type"]) == (415, "application/json")
    assert json.loads(body)["message"].startswith("Content-Type 'text/plain' is not supported")


def test_an_oversized_body_is_a_413(tracing, endpoint, secret, settings):
    settings.INGEST_MAX_BODY_BYTES = 2048
    status, _, body = post(endpoint, b"\x00" * 4096, content_type=PROTOBUF, secret=secret)
    assert status == 413
    assert RpcStatus.FromString(body).code == 8  # RESOURCE_EXHAUSTED
    bomb = gzip.compress(b"\x00" * 100_000)
    status, _, _ = post(endpoint, bomb, content_type=PROTOBUF, secret=secret, encoding="gzip")
    assert status == 413


def test_keys_are_checked_like_everywhere_else(endpoint, recording, org):
    recording.span(OPENAI_CHAT)
    body = encode_spans(recording.spans()).SerializeToString()

    status, headers, response = post(endpoint, body, content_type=PROTOBUF)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert RpcStatus.FromString(response).code == 16  # UNAUTHENTICATED

    _, read_only = ApiKeyFactory.create_with_secret(tenant=org, scopes=["read"])
    status, _, response = post(endpoint, body, content_type=PROTOBUF, secret=read_only)
    assert status == 403
    assert "ingest" in RpcStatus.FromString(response).message

    rejected = OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": "Bearer cbk_wrong"}, timeout=5)
    assert rejected.export(recording.spans()) == SpanExportResult.FAILURE
    assert UsageRecord.objects.count() == 0


def test_large_exports_are_stored_in_slices_and_name_the_rejected_span(recording, endpoint, secret, settings):
    settings.INGEST_MAX_RECORDS = 2
    spans = [recording.span({**OPENAI_CHAT, "gen_ai.usage.output_tokens": 100 + index}) for index in range(4)]
    bad = recording.span({**OPENAI_CHAT, "gen_ai.usage.reasoning.output_tokens": 999})
    recording.span({**OPENAI_CHAT, "gen_ai.usage.output_tokens": 500})

    status, headers, response = post_protobuf(endpoint, recording.spans(), secret)

    assert status == 200
    assert headers["X-Chargeback-Accepted-Spans"] == "5"
    assert response.partial_success.rejected_spans == 1
    assert response.partial_success.error_message.startswith(f"1 GenAI span(s) rejected: {event_id(bad)}: ")
    assert UsageRecord.objects.filter(event_id__in=[event_id(span) for span in spans]).count() == 4


def test_spans_of_unknown_models_are_stored_with_a_warning(recording, endpoint, secret):
    recording.span({**OPENAI_CHAT, "gen_ai.response.model": "in-house-llm-7"})
    status, _, response = post_protobuf(endpoint, recording.spans(), secret)
    assert status == 200
    assert response.partial_success.rejected_spans == 0
    assert "without a known price" in response.partial_success.error_message
    assert UsageRecord.objects.get().cost_nanos is None
