"""Decoding and validating usage records as clients send them, without a serializer per record.

msgspec validates each record in C against `UsageRecordIn`; the checks that span fields (token
parts within wholes, timestamps, tenants) follow in `normalize`. Every problem becomes a
`RecordError` with a stable code, so one bad record never costs the others.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from chargeback import money
from chargeback.pricing import TokenBuckets, normalize_provider
from chargeback.provider_usage import UsageObjectError, buckets_from_usage_object

MAX_TOKENS = 1_000_000_000
MAX_TAGS = 32
MAX_REPORTED_COST_USD = Decimal(1_000_000)
EARLIEST_TIMESTAMP = datetime(2015, 1, 1, tzinfo=UTC)

TokenCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
# Tag keys must also match TAG_KEY_PATTERN: checked in `decode_record`, once per distinct key, as a
# msgspec `pattern` costs a regex search per key of every record (a tenth of the ingest CPU).
TagKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
TAG_KEY_PATTERN = r"^[A-Za-z0-9_.:-]+$"
TagValue = Annotated[str, msgspec.Meta(max_length=256)]
# A client's digest of the prompt: a hex or base64url digest, optionally with a "sha256:" style prefix.
PROMPT_HASH_PATTERN = r"^[0-9A-Za-z_:-]+$"
MAX_PROMPT_HASH_LENGTH = 128
PromptHash = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_PROMPT_HASH_LENGTH, pattern=PROMPT_HASH_PATTERN)
]
_PROMPT_HASH = re.compile(PROMPT_HASH_PATTERN)


def prompt_hash_acceptable(value: str | None) -> bool:
    """Whether a prompt hash found in an integration's payload (an OpenTelemetry attribute, LiteLLM
    metadata) is one a record can carry. Such a hash is secondary, like latency: the integrations
    drop one that is not, rather than lose the record's cost."""
    return value is not None and len(value) <= MAX_PROMPT_HASH_LENGTH and bool(_PROMPT_HASH.match(value))


class UsageRecordIn(msgspec.Struct, forbid_unknown_fields=True):
    """One LLM call as a client reports it (the API's own record format)."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)]
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    tenant: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    input_tokens: TokenCount | None = None
    output_tokens: TokenCount | None = None
    cached_input_tokens: TokenCount | None = None
    cache_write_tokens: TokenCount | None = None
    cache_write_1h_tokens: TokenCount | None = None
    reasoning_tokens: TokenCount | None = None
    usage: dict[str, Any] | None = None
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    status: Literal["ok", "error"] = "ok"
    tags: Annotated[dict[TagKey, TagValue], msgspec.Meta(max_length=MAX_TAGS)] = {}
    cost_usd: Decimal | None = None
    prompt_hash: PromptHash | None = None


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    records: list[msgspec.Raw]


_RECORD_DECODER = msgspec.json.Decoder(UsageRecordIn)
_LIST_DECODER = msgspec.json.Decoder(list[msgspec.Raw])
_ENVELOPE_DECODER = msgspec.json.Decoder(_Envelope)
_HASH_ENCODER = msgspec.json.Encoder(order="sorted")


class BodyError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class RecordError(Exception):
    code: str
    message: str


def split_body(body: bytes, *, ndjson: bool, max_records: int) -> list[Any]:
    """The records of a request body, still undecoded (msgspec.Raw or bytes)."""
    if ndjson:
        items = [line for line in body.split(b"\n") if line.strip()]
    else:
        stripped = body.lstrip()
        try:
            if stripped.startswith(b"["):
                items = _LIST_DECODER.decode(body)
            elif stripped.startswith(b"{"):
                items = _ENVELOPE_DECODER.decode(body).records
            else:
                raise BodyError(
                    "invalid_json",
                    "The body must be a JSON array of records, an object with 'records', or NDJSON.",
                )
        except msgspec.DecodeError as error:
            code = "invalid_json" if not isinstance(error, msgspec.ValidationError) else "invalid_body_shape"
            raise BodyError(code, f"The body is not valid: {error}") from error
    if len(items) > max_records:
        raise BodyError(
            "too_many_records", f"{len(items)} records in one request; the limit is {max_records}."
        )
    return items


_MISSING = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")


def _validation_code(message: str) -> str:
    if _MISSING.search(message):
        return "missing_field"
    if _UNKNOWN.search(message):
        return "unknown_field"
    if "timezone" in message:
        return "timestamp_without_zone"
    if message.startswith("Expected `") and ", got `" in message:
        return "invalid_type"
    if "JSON" in message or "malformed" in message.lower() or "truncated" in message.lower():
        return "invalid_json"
    return "invalid_value"


class TextRecord(dict):
    """A record whose values are all text (a CSV row): numbers and dates are parsed from strings."""


def decode_record(item: Any) -> UsageRecordIn:
    """Validate one raw record: JSON bytes/msgspec.Raw, an already-parsed mapping, or a TextRecord."""
    try:
        if isinstance(item, dict):
            record = msgspec.convert(item, UsageRecordIn, strict=not isinstance(item, TextRecord))
        else:
            record = _RECORD_DECODER.decode(item)
    except msgspec.DecodeError as error:
        message = str(error)
        code = "invalid_json" if not isinstance(error, msgspec.ValidationError) else _validation_code(message)
        raise RecordError(code, message) from error
    if not _VALID_TAG_KEYS.issuperset(record.tags):
        for key in record.tags:
            if key not in _VALID_TAG_KEYS:
                _check_tag_key(key)
    return record


_TAG_KEY = re.compile(TAG_KEY_PATTERN)
_VALID_TAG_KEYS: set[str] = set()


def _check_tag_key(key: str) -> None:
    if not _TAG_KEY.search(key):
        # The very error msgspec gives for a `pattern` (the rule used to live in TagKey).
        raise RecordError(
            "invalid_value", f"Expected `str` matching regex {TAG_KEY_PATTERN!r} - at `key` in `$.tags`"
        )
    if len(_VALID_TAG_KEYS) >= 10_000:  # bounded: keys are few in practice, but clients choose them
        _VALID_TAG_KEYS.clear()
    _VALID_TAG_KEYS.add(key)


def event_id_of(item: Any) -> str | None:
    """Best-effort event_id of a record that failed validation, for the error report."""
    try:
        data = item if isinstance(item, dict) else msgspec.json.decode(item)
    except msgspec.DecodeError:
        return None
    value = data.get("event_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def token_buckets(record: UsageRecordIn) -> TokenBuckets:
    if record.usage is not None:
        has_fields = not (
            record.input_tokens is None
            and record.output_tokens is None
            and record.cached_input_tokens is None
            and record.cache_write_tokens is None
            and record.reasoning_tokens is None
            and record.cache_write_1h_tokens is None
        )
        if has_fields:
            raise RecordError(
                "ambiguous_tokens", "Send either a provider 'usage' object or token fields, not both."
            )
        try:
            return buckets_from_usage_object(record.usage)
        except UsageObjectError as error:
            raise RecordError("invalid_usage_object", str(error)) from error
    if record.input_tokens is None and record.output_tokens is None:
        raise RecordError(
            "missing_tokens", "A record needs input_tokens and output_tokens (or a 'usage' object)."
        )
    input_total = record.input_tokens or 0
    output_total = record.output_tokens or 0
    cached = record.cached_input_tokens or 0
    cache_write = record.cache_write_tokens or 0
    reasoning = record.reasoning_tokens or 0
    cache_write_1h = record.cache_write_1h_tokens or 0
    if cache_write_1h > cache_write:
        raise RecordError(
            "inconsistent_tokens",
            f"cache_write_1h_tokens ({cache_write_1h}) exceed cache_write_tokens ({cache_write}); they are a part of it.",
        )
    if cached + cache_write > input_total:
        raise RecordError(
            "inconsistent_tokens",
            f"cached_input_tokens + cache_write_tokens ({cached + cache_write}) exceed input_tokens ({input_total});"
            " input_tokens is the whole input, cache included.",
        )
    if reasoning > output_total:
        raise RecordError(
            "inconsistent_tokens",
            f"reasoning_tokens ({reasoning}) exceed output_tokens ({output_total});"
            " output_tokens is the whole output, reasoning included.",
        )
    return TokenBuckets(
        input_total - cached - cache_write, cached, cache_write, output_total, reasoning, cache_write_1h
    )


def check_timestamp(timestamp: datetime, *, now: datetime, max_future_skew: timedelta) -> datetime:
    occurred_at = timestamp if timestamp.tzinfo is UTC else timestamp.astimezone(UTC)
    if occurred_at > now + max_future_skew:
        raise RecordError(
            "timestamp_in_future",
            f"timestamp {timestamp.isoformat()} is more than {int(max_future_skew.total_seconds())}s in the future.",
        )
    if occurred_at < EARLIEST_TIMESTAMP:
        raise RecordError("timestamp_too_old", f"timestamp {timestamp.isoformat()} is before 2015.")
    return occurred_at


def reported_cost_nanos(record: UsageRecordIn) -> int | None:
    if record.cost_usd is None:
        return None
    cost = record.cost_usd
    if not cost.is_finite() or cost < 0 or cost > MAX_REPORTED_COST_USD:
        raise RecordError("invalid_cost", "cost_usd must be a finite amount between 0 and 1,000,000 USD.")
    return money.usd_to_nanos(cost)


def payload_hash(
    record: UsageRecordIn,
    occurred_at: datetime,
    buckets: TokenBuckets,
    reported_nanos: int | None,
    provider: str | None = None,
) -> str:
    """A digest of what the record means (not how it was spelled), to tell resends from conflicts.
    `provider` is the record's provider already normalised, when the caller has it."""
    canonical = (
        occurred_at,
        normalize_provider(record.provider) if provider is None else provider,
        record.model,
        buckets.uncached_input,
        buckets.cached_input,
        buckets.cache_write,
        buckets.output,
        buckets.reasoning,
        buckets.cache_write_1h,
        record.latency_ms,
        record.status,
        record.tags,
        reported_nanos,
    )
    if record.prompt_hash is not None:
        # Only when present, so that the stored digests of records without one never change.
        canonical = (*canonical, record.prompt_hash)
    encoded = _HASH_ENCODER.encode(canonical)
    # The digest has always been of occurred_at.isoformat(). msgspec writes a UTC datetime exactly
    # so, but ending in "Z" rather than "+00:00", and ten times faster: patch the suffix.
    if encoded[encoded.index(b'"', 2) - 1] == 90:  # "Z": the first 'Z"' ends the timestamp
        encoded = encoded.replace(b'Z"', b'+00:00"', 1)
    else:  # not in UTC (callers pass UTC): the slow, obvious spelling
        encoded = _HASH_ENCODER.encode((occurred_at.isoformat(), *canonical[1:]))
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()
