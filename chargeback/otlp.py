"""OpenTelemetry traces (OTLP/HTTP) → usage records.

An `ExportTraceServiceRequest` arrives as binary protobuf or OTLP JSON. Spans that describe an LLM
call (the GenAI semantic conventions, current and older attribute names) become usage records in
the API's own format and go through the one ingestion service, so idempotency, pricing and
per-record errors are exactly those of `POST /api/v1/usage/`. Every other span is ignored and
counted: an application exports all its spans to one endpoint, and most are not LLM calls.

OTLP JSON is parsed with protobuf's own `json_format` after turning the hex trace and span ids
into the base64 that proto3 JSON expects. That keeps one mapping (from the protobuf message) for
both encodings and gets the OTLP rules (int64 as strings or numbers, integer enums, unknown fields
ignored) from the schema itself rather than from a second hand-written parser. It is slower than
a hand-rolled decoder, but protobuf is what the SDK exporters send by default.
"""

from __future__ import annotations

import binascii
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from chargeback.models import UsageSource
from chargeback.services import IngestResult, usage_records_ingest
from chargeback.usage_input import MAX_TAGS, prompt_hash_acceptable

logger = logging.getLogger(__name__)

# Current GenAI semantic-convention names first, then the older ones OpenLLMetry and OpenLIT send.
PROVIDER_ATTRIBUTES = ("gen_ai.provider.name", "gen_ai.system")
MODEL_ATTRIBUTES = ("gen_ai.response.model", "gen_ai.request.model")
INPUT_TOKENS_ATTRIBUTES = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS_ATTRIBUTES = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ_ATTRIBUTES = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.prompt_tokens_details.cached_tokens",
)
CACHE_WRITE_ATTRIBUTES = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
REASONING_ATTRIBUTES = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
)
COST_ATTRIBUTES = ("gen_ai.usage.cost",)

MAX_LATENCY_MS = 86_400_000
MAX_TAG_VALUE_LENGTH = 256
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How many rejected spans are named in partialSuccess.errorMessage; the rest are counted.
_ERRORS_IN_MESSAGE = 5


class OtlpBodyError(ValueError):
    """The body is not an ExportTraceServiceRequest in the declared encoding."""


class SpanError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --- decoding -------------------------------------------------------------------------------


def otlp_request_decode(body: bytes, *, json: bool) -> ExportTraceServiceRequest:
    """An ExportTraceServiceRequest from protobuf bytes or OTLP JSON; OtlpBodyError if it is not one."""
    if not json:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except (DecodeError, RecursionError, ValueError) as error:
            raise OtlpBodyError(f"The body is not a protobuf ExportTraceServiceRequest: {error}") from error
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise OtlpBodyError(f"The body is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise OtlpBodyError("The body must be a JSON object (an ExportTraceServiceRequest).")
    _hex_ids_to_base64(document)
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise OtlpBodyError(f"The body is not an OTLP JSON ExportTraceServiceRequest: {error}") from error
    return message


def _hex_ids_to_base64(document: dict) -> None:
    """OTLP JSON writes trace and span ids in hex; proto3 JSON (json_format) reads bytes as base64."""
    for resource_spans in _items(document, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                _convert_ids(
                    span, ("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id")
                )
                for link in _items(span, "links"):
                    _convert_ids(link, ("traceId", "trace_id"), ("spanId", "span_id"))


def _items(container: Any, *names: str) -> list:
    if not isinstance(container, dict):
        raise OtlpBodyError("Expected a JSON object in an ExportTraceServiceRequest.")
    for name in names:
        value = container.get(name)
        if value is None:
            continue
        if not isinstance(value, list):
            raise OtlpBodyError(f"'{name}' must be a JSON array.")
        return value
    return []


def _convert_ids(container: dict, *name_pairs: tuple[str, str]) -> None:
    for names in name_pairs:
        for name in names:
            value = container.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise OtlpBodyError(f"'{name}' must be a hex string.")
            try:
                container[name] = binascii.b2a_base64(bytes.fromhex(value), newline=False).decode()
            except ValueError as error:
                raise OtlpBodyError(f"'{name}' is not a hex string: {value[:40]!r}.") from error


def otlp_response_encode(response: ExportTraceServiceResponse, *, json: bool) -> bytes:
    if json:
        return msgspec.json.encode(json_format.MessageToDict(response))
    return response.SerializeToString()


# --- attribute mapping ----------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeMapping:
    """Where the tenant, each tag and the prompt hash come from: attribute names in order of preference."""

    tenant: tuple[str, ...]
    tags: tuple[tuple[str, tuple[str, ...]], ...]
    prompt_hash: tuple[str, ...] = ()


_mapping_cache: dict[str, AttributeMapping] = {}


def otlp_attribute_mapping() -> AttributeMapping:
    """settings.OTLP_ATTRIBUTE_MAPPING, validated (once per distinct value)."""
    raw = settings.OTLP_ATTRIBUTE_MAPPING
    cache_key = repr(raw)
    mapping = _mapping_cache.get(cache_key)
    if mapping is None:
        mapping = _mapping_cache[cache_key] = _mapping_parse(raw)
    return mapping


def _mapping_parse(raw: Any) -> AttributeMapping:
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured("OTLP_ATTRIBUTE_MAPPING must be a JSON object.")
    tenant: tuple[str, ...] = ()
    prompt_hash: tuple[str, ...] = ()
    tags = []
    for target, names in raw.items():
        if isinstance(names, str):
            names = [names]
        if names is None:
            names = []
        if not isinstance(names, list | tuple) or not all(isinstance(name, str) and name for name in names):
            raise ImproperlyConfigured(
                f"OTLP_ATTRIBUTE_MAPPING[{target!r}] must be a list of attribute names."
            )
        if target == "tenant":
            tenant = tuple(names)
        elif target == "prompt_hash":
            prompt_hash = tuple(names)
        elif isinstance(target, str) and target.startswith("tag.") and _TAG_KEY.match(target[4:]):
            if names:
                tags.append((target[4:], tuple(names)))
        else:
            raise ImproperlyConfigured(
                f"OTLP_ATTRIBUTE_MAPPING key {target!r} must be 'tenant' or 'tag.<key>' "
                "(key: letters, digits, _ . : -, up to 64), or 'prompt_hash'."
            )
    return AttributeMapping(tenant=tenant, tags=tuple(tags[:MAX_TAGS]), prompt_hash=prompt_hash)


# --- spans → records ------------------------------------------------------------------------


def _text(value: AnyValue | None) -> str | None:
    """An attribute as text: strings as they are, numbers and booleans spelled out, else None."""
    if value is None:
        return None
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value.strip() or None
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value" and math.isfinite(value.double_value):
        number = value.double_value
        return str(int(number)) if number.is_integer() else repr(number)
    return None


def _count(value: AnyValue, name: str) -> int:
    """A token count: an integer attribute (or an integral double, or digits in a string)."""
    kind = value.WhichOneof("value")
    if kind == "int_value":
        return value.int_value
    if kind == "double_value" and math.isfinite(value.double_value) and value.double_value.is_integer():
        return int(value.double_value)
    if kind == "string_value" and re.fullmatch(r"\s*-?\d{1,18}\s*", value.string_value):
        return int(value.string_value)
    raise SpanError("invalid_attribute", f"attribute {name} must be an integer token count.")


def _first(attributes: Mapping[str, AnyValue], names: tuple[str, ...]) -> tuple[str, AnyValue] | None:
    for name in names:
        value = attributes.get(name)
        if value is not None and value.WhichOneof("value") is not None:
            return name, value
    return None


def _first_count(attributes: Mapping[str, AnyValue], names: tuple[str, ...]) -> int | None:
    found = _first(attributes, names)
    return None if found is None else _count(found[1], found[0])


def _first_text(attributes: Mapping[str, AnyValue], names: tuple[str, ...]) -> str | None:
    for name in names:
        text = _text(attributes.get(name))
        if text is not None:
            return text
    return None


def _mapped_text(
    names: tuple[str, ...],
    span_attributes: Mapping[str, AnyValue],
    resource_attributes: Mapping[str, AnyValue],
) -> str | None:
    """The first name (in the mapping's order) present on the span or, failing that, the resource."""
    for name in names:
        text = _text(span_attributes.get(name))
        if text is None:
            text = _text(resource_attributes.get(name))
        if text is not None:
            return text
    return None


def _timestamp(unix_nanos: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=unix_nanos // 1000)
    except OverflowError as error:
        raise SpanError("invalid_timestamp", f"start time {unix_nanos} ns is out of range.") from error


def is_genai_span(attributes: Mapping[str, AnyValue]) -> bool:
    """An LLM call we can bill: a provider, a model and some token usage."""
    return (
        _first_text(attributes, PROVIDER_ATTRIBUTES) is not None
        and _first_text(attributes, MODEL_ATTRIBUTES) is not None
        and _first(attributes, INPUT_TOKENS_ATTRIBUTES + OUTPUT_TOKENS_ATTRIBUTES) is not None
    )


def span_event_id(span: Span) -> str:
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        raise SpanError(
            "invalid_span_id", "a span needs a 16-byte trace id and an 8-byte span id to be deduplicated."
        )
    return f"otlp-{span.trace_id.hex()}-{span.span_id.hex()}"


def span_to_record(
    span: Span,
    attributes: Mapping[str, AnyValue],
    resource_attributes: Mapping[str, AnyValue],
    mapping: AttributeMapping,
) -> dict[str, Any]:
    """One GenAI span as a record in the API's own format (validated later by the ingestion)."""
    event_id = span_event_id(span)
    # Input includes cache reads and writes, and output includes reasoning, as in the GenAI
    # conventions; a part larger than its whole is rejected by the ingestion, never clamped.
    record: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": _timestamp(span.start_time_unix_nano).isoformat(),
        "provider": _first_text(attributes, PROVIDER_ATTRIBUTES),
        "model": _first_text(attributes, MODEL_ATTRIBUTES),
        "input_tokens": _first_count(attributes, INPUT_TOKENS_ATTRIBUTES),
        "output_tokens": _first_count(attributes, OUTPUT_TOKENS_ATTRIBUTES),
        "cached_input_tokens": _first_count(attributes, CACHE_READ_ATTRIBUTES),
        "cache_write_tokens": _first_count(attributes, CACHE_WRITE_ATTRIBUTES),
        "reasoning_tokens": _first_count(attributes, REASONING_ATTRIBUTES),
        "status": "error" if span.status.code == Status.STATUS_CODE_ERROR else "ok",
    }
    if span.end_time_unix_nano >= span.start_time_unix_nano > 0:
        latency_ms = (span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000
        # Latency is secondary: an implausible one is dropped rather than costing the record.
        if latency_ms <= MAX_LATENCY_MS:
            record["latency_ms"] = latency_ms
    cost = _first(attributes, COST_ATTRIBUTES)
    if cost is not None:
        record["cost_usd"] = _cost_text(cost[1])
    tenant = _mapped_text(mapping.tenant, attributes, resource_attributes) if mapping.tenant else None
    if tenant is not None:
        record["tenant"] = tenant
    tags = {}
    for key, names in mapping.tags:
        value = _mapped_text(names, attributes, resource_attributes)
        if value is not None:
            # A long attribute (a whole prompt template, say) is cut, not a reason to lose the cost.
            tags[key] = value[:MAX_TAG_VALUE_LENGTH]
    record["tags"] = tags
    if mapping.prompt_hash:
        prompt_hash = _mapped_text(mapping.prompt_hash, attributes, resource_attributes)
        if prompt_hash_acceptable(prompt_hash):
            record["prompt_hash"] = prompt_hash
    return record


def _cost_text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "double_value":
        # repr is the shortest text that reads back as the same double (0.000225, not 0.000224999…).
        return repr(value.double_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "string_value":
        return value.string_value.strip()
    raise SpanError("invalid_attribute", "attribute gen_ai.usage.cost must be a number (USD).")


@dataclass
class TraceExportResult:
    spans: int = 0
    ignored: int = 0
    ingest: IngestResult = field(default_factory=IngestResult)

    @property
    def rejected(self) -> int:
        # A conflicting re-export (same span id, other numbers) is not stored: rejected too.
        return self.ingest.rejected + self.ingest.conflicts

    def response(self) -> ExportTraceServiceResponse:
        response = ExportTraceServiceResponse()
        if self.rejected:
            errors = self.ingest.errors
            named = "; ".join(
                f"{error['event_id'] or 'span'}: {error['code']}: {error['message']}"
                for error in errors[:_ERRORS_IN_MESSAGE]
            )
            more = (
                f" (and {len(errors) - _ERRORS_IN_MESSAGE} more)" if len(errors) > _ERRORS_IN_MESSAGE else ""
            )
            response.partial_success.rejected_spans = self.rejected
            response.partial_success.error_message = f"{self.rejected} GenAI span(s) rejected: {named}{more}"
        elif self.ingest.unpriced:
            # The spec allows a warning with rejected_spans = 0: the spans are stored but cost nothing yet.
            response.partial_success.error_message = (
                f"{self.ingest.unpriced} GenAI span(s) stored without a known price; "
                "add a price override for their models."
            )
        return response


def _spans(request: ExportTraceServiceRequest) -> Iterator[tuple[Span, dict[str, AnyValue]]]:
    for resource_spans in request.resource_spans:
        resource_attributes = {kv.key: kv.value for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield span, resource_attributes


def otlp_traces_ingest(
    *,
    request: ExportTraceServiceRequest,
    scope_tenant_ids: list[int] | None,
    default_tenant_id: int | None,
    now: datetime | None = None,
) -> TraceExportResult:
    """Store the GenAI spans of an export as usage records (source "otlp"); count the others."""
    mapping = otlp_attribute_mapping()
    result = TraceExportResult()
    records: list[dict[str, Any]] = []
    positions: list[int] = []  # each record's span, counted through the whole export
    for position, (span, resource_attributes) in enumerate(_spans(request)):
        result.spans += 1
        attributes = {kv.key: kv.value for kv in span.attributes}
        if not is_genai_span(attributes):
            result.ignored += 1
            continue
        try:
            records.append(span_to_record(span, attributes, resource_attributes, mapping))
            positions.append(position)
        except SpanError as error:
            result.ingest.rejected += 1
            event_id = None
            if len(span.trace_id) == 16 and len(span.span_id) == 8:
                event_id = f"otlp-{span.trace_id.hex()}-{span.span_id.hex()}"
            result.ingest.error(position, event_id, error.code, error.message)
    # Large exports are stored in slices of the usual batch size, each in its own transaction,
    # rather than refused: an OTLP exporter drops a batch that is answered with a 4xx.
    batch_size = max(1, settings.INGEST_MAX_RECORDS)
    for start in range(0, len(records), batch_size):
        stored = usage_records_ingest(
            items=records[start : start + batch_size],
            scope_tenant_ids=scope_tenant_ids,
            default_tenant_id=default_tenant_id,
            source=UsageSource.OTLP,
            now=now,
        )
        for error in stored.errors:
            error["index"] = positions[start + error["index"]]
        result.ingest.merge(stored)
    result.ingest.errors.sort(key=lambda error: error["index"])
    if result.rejected:
        logger.warning(
            "OTLP export: %d of %d spans rejected: %s",
            result.rejected,
            result.spans,
            result.response().partial_success.error_message,
        )
    logger.debug(
        "OTLP export: %d spans, %d ignored (not GenAI), %d accepted, %d duplicates",
        result.spans,
        result.ignored,
        result.ingest.accepted,
        result.ingest.duplicates,
    )
    return result
