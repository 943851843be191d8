"""LiteLLM's generic API callback (StandardLoggingPayload) → usage records.

LiteLLM posts a JSON array of payloads (`log_format: json_array`, its default), NDJSON, or one
payload per request (`single`), always as `application/json`. Each payload is decoded into the
few fields we read; everything else in it (prompts, responses, LiteLLM's model map) is skipped by
msgspec without being built. Payloads are full of nulls and vary between call types and LiteLLM
versions, so every field is checked here and a payload we cannot read is rejected alone.

Mapping (documented in the README):
- event_id `litellm-<litellm_call_id>` (else `litellm-<id>`): the call id is unique per call, while
  `id` is the provider's response id, which a LiteLLM cache hit can repeat.
- provider `custom_llm_provider`, model `model` (the ingestion strips a provider prefix).
- tokens from `metadata.usage_object` (LiteLLM's OpenAI-shaped usage: cache reads, cache writes and
  reasoning included), else `prompt_tokens` / `completion_tokens`.
- timestamp `startTime`, latency `endTime - startTime`, status success → ok, failure → error,
  `response_cost` → the reported cost (our own price is still computed, both are kept).
- tenant: the first of settings.LITELLM_TENANT_FIELDS (paths in `metadata`) whose value, or its
  slug, is a tenant the key may write; else the key's own tenant.
- tags: team, key_alias, user, call_type, model_group, feature (the first request tag that is not
  LiteLLM's automatic "User-Agent: …"), and every `requester_metadata` entry `chargeback_<key>`
  (as tag `<key>`, winning over the derived ones) but `chargeback_tenant` and
  `chargeback_prompt_hash`, which is the record's prompt hash (dropped if it is not a valid one).
- LiteLLM cache hits are ignored: no provider call was made, so there is nothing to charge back.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from django.conf import settings
from django.utils.text import slugify

from chargeback.models import UsageSource
from chargeback.services import IngestResult, usage_records_ingest
from chargeback.usage_input import MAX_TAGS, MAX_TOKENS, BodyError, prompt_hash_acceptable
from tenants.selectors import tenant_slugs_writable

logger = logging.getLogger(__name__)

MAX_TAG_VALUE_LENGTH = 256
MAX_EVENT_ID_LENGTH = 200
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_REQUESTER_TAG_PREFIX = "chargeback_"
# requester_metadata entries chargeback_<key> that are record fields, not tags.
_REQUESTER_FIELDS = {"tenant", "prompt_hash"}
_USER_AGENT_TAG_PREFIX = "user-agent:"


class LiteLlmPayload(msgspec.Struct):
    """The fields of a StandardLoggingPayload we read. Loosely typed on purpose: a wrong type in one
    payload must reject that payload in `payload_to_record`, not fail the decoding of the batch."""

    id: Any = None
    litellm_call_id: Any = None
    call_type: Any = None
    status: Any = None
    model: Any = None
    model_group: Any = None
    custom_llm_provider: Any = None
    response_cost: Any = None
    prompt_tokens: Any = None
    completion_tokens: Any = None
    start_time: Any = msgspec.field(name="startTime", default=None)
    end_time: Any = msgspec.field(name="endTime", default=None)
    request_tags: Any = None
    end_user: Any = None
    cache_hit: Any = None
    metadata: Any = None


_PAYLOAD_DECODER = msgspec.json.Decoder(LiteLlmPayload)
_LIST_DECODER = msgspec.json.Decoder(list[msgspec.Raw])


class PayloadError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class CacheHit(Exception):
    """The payload is a LiteLLM cache hit: no provider call to charge."""


def litellm_body_split(body: bytes) -> list[bytes | msgspec.Raw]:
    """The payloads of a callback body (JSON array, NDJSON or a single object), still undecoded."""
    stripped = body.strip()
    if not stripped:
        raise BodyError("empty_body", "The request body is empty.")
    if stripped.startswith(b"["):
        try:
            items: list = _LIST_DECODER.decode(stripped)
        except msgspec.DecodeError as error:
            raise BodyError("invalid_json", f"The body is not a valid JSON array: {error}") from error
    else:
        lines = [line for line in stripped.split(b"\n") if line.strip()]
        if len(lines) == 1:
            items = lines
        else:
            # Several lines: NDJSON, unless they are one pretty-printed object (checked without
            # building it: a Raw is only validated).
            try:
                msgspec.json.decode(stripped, type=msgspec.Raw)
                items = [stripped]
            except msgspec.DecodeError:
                items = lines
    return items


# --- field readers --------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _count(value: Any, name: str) -> int:
    """A token count; None and absent are 0 (LiteLLM sends null for what it did not measure)."""
    if value is None:
        return 0
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError("invalid_tokens", f"{name} must be an integer token count, not {value!r:.40}.")
    if not 0 <= value <= MAX_TOKENS:
        raise PayloadError("invalid_tokens", f"{name} must be between 0 and {MAX_TOKENS}, not {value}.")
    return value


def _epoch_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PayloadError("invalid_timestamp", f"{name} must be epoch seconds, not {value!r:.40}.")
    return float(value)


def _path(metadata: Mapping[str, Any], dotted: str) -> Any:
    value: Any = metadata
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _tokens(payload: LiteLlmPayload, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Token fields in the API's own format, or a provider `usage` object for the ingestion."""
    usage = metadata.get("usage_object")
    if isinstance(usage, Mapping) and ("prompt_tokens" in usage or "completion_tokens" in usage):
        # LiteLLM's usage is OpenAI-shaped for every provider: prompt_tokens includes cache reads
        # and writes (it adds Anthropic's back in), completion_tokens includes reasoning. Its cache
        # writes have several spellings across versions, which are read here explicitly.
        prompt_details = _mapping(usage.get("prompt_tokens_details"))
        completion_details = _mapping(usage.get("completion_tokens_details"))
        cache_write = prompt_details.get("cache_write_tokens")
        if cache_write is None:
            cache_write = prompt_details.get("cache_creation_tokens")
        if cache_write is None:
            cache_write = usage.get("cache_creation_input_tokens")
        cached = prompt_details.get("cached_tokens")
        if cached is None:
            cached = usage.get("cache_read_input_tokens")
        creation_details = _mapping(prompt_details.get("cache_creation_token_details"))
        return {
            "input_tokens": _count(usage.get("prompt_tokens"), "usage_object.prompt_tokens"),
            "output_tokens": _count(usage.get("completion_tokens"), "usage_object.completion_tokens"),
            "cached_input_tokens": _count(cached, "usage_object.prompt_tokens_details.cached_tokens"),
            "cache_write_tokens": _count(
                cache_write, "usage_object.prompt_tokens_details.cache_write_tokens"
            ),
            "cache_write_1h_tokens": _count(
                creation_details.get("ephemeral_1h_input_tokens"),
                "usage_object.prompt_tokens_details.cache_creation_token_details.ephemeral_1h_input_tokens",
            ),
            "reasoning_tokens": _count(
                completion_details.get("reasoning_tokens"),
                "usage_object.completion_tokens_details.reasoning_tokens",
            ),
        }
    if isinstance(usage, Mapping) and any(
        key in usage for key in ("input_tokens", "output_tokens", "promptTokenCount", "prompt_token_count")
    ):
        # A provider's own usage shape (pass-through routes): the ingestion maps those.
        return {"usage": dict(usage)}
    return {
        "input_tokens": _count(payload.prompt_tokens, "prompt_tokens"),
        "output_tokens": _count(payload.completion_tokens, "completion_tokens"),
    }


def _tags(payload: LiteLlmPayload, metadata: Mapping[str, Any]) -> dict[str, str]:
    derived = {
        "team": _text(metadata.get("user_api_key_team_alias")) or _text(metadata.get("user_api_key_team_id")),
        "key_alias": _text(metadata.get("user_api_key_alias")),
        "user": _text(payload.end_user) or _text(metadata.get("user_api_key_end_user_id")),
        "call_type": _text(payload.call_type),
        "model_group": _text(payload.model_group),
    }
    if isinstance(payload.request_tags, list):
        derived["feature"] = next(
            (
                text
                for text in map(_text, payload.request_tags)
                if text is not None and not text.lower().startswith(_USER_AGENT_TAG_PREFIX)
            ),
            None,
        )
    tags = {key: value for key, value in derived.items() if value is not None}
    for key, value in _mapping(metadata.get("requester_metadata")).items():
        if not isinstance(key, str) or not key.startswith(_REQUESTER_TAG_PREFIX):
            continue
        tag_key, text = key[len(_REQUESTER_TAG_PREFIX) :], _text(value)
        if tag_key not in _REQUESTER_FIELDS and text is not None and _TAG_KEY.match(tag_key):
            tags[tag_key] = text
    return {key: value[:MAX_TAG_VALUE_LENGTH] for key, value in list(tags.items())[:MAX_TAGS]}


def _tenant_candidates(metadata: Mapping[str, Any]) -> list[str]:
    candidates = []
    for dotted in settings.LITELLM_TENANT_FIELDS:
        text = _text(_path(metadata, dotted))
        if text is not None:
            candidates.append(text)
            slug = slugify(text)
            if slug and slug != text:
                candidates.append(slug)
    return candidates


def _event_id(payload: LiteLlmPayload) -> str:
    call_id = _text(payload.litellm_call_id) or _text(payload.id)
    if call_id is None:
        raise PayloadError("missing_field", "a payload needs an 'id' or 'litellm_call_id'.")
    event_id = f"litellm-{call_id}"
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise PayloadError(
            "invalid_value", f"the payload id is longer than {MAX_EVENT_ID_LENGTH - 8} characters."
        )
    return event_id


def _event_id_or_none(payload: LiteLlmPayload) -> str | None:
    try:
        return _event_id(payload)
    except PayloadError:
        return None


def payload_to_record(payload: LiteLlmPayload, *, writable_slugs: set[str]) -> dict[str, Any]:
    """One payload as a record in the API's own format; PayloadError if it cannot be read."""
    event_id = _event_id(payload)
    if payload.cache_hit is True:
        raise CacheHit
    metadata = _mapping(payload.metadata)
    model = _text(payload.model)
    if model is None:
        raise PayloadError("missing_field", "the payload has no 'model'.")
    provider = _text(payload.custom_llm_provider)
    if provider is None and "/" in model:
        provider = model.split("/", 1)[0]
    if provider is None:
        raise PayloadError("missing_field", "the payload has no 'custom_llm_provider'.")
    start = _epoch_seconds(payload.start_time, "startTime")
    try:
        timestamp = datetime.fromtimestamp(start, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError) as error:
        raise PayloadError("invalid_timestamp", f"startTime {start} is out of range.") from error
    record: dict[str, Any] = {
        "event_id": event_id,
        "timestamp": timestamp,
        "provider": provider,
        "model": model,
        "status": "error" if payload.status == "failure" else "ok",
        "tags": _tags(payload, metadata),
        **_tokens(payload, metadata),
    }
    if payload.end_time is not None:
        latency_ms = round((_epoch_seconds(payload.end_time, "endTime") - start) * 1000)
        # Latency is secondary: an implausible one is dropped rather than costing the record.
        if 0 <= latency_ms <= 86_400_000:
            record["latency_ms"] = latency_ms
    cost = payload.response_cost
    if cost is not None:
        if isinstance(cost, bool) or not isinstance(cost, int | float | str):
            raise PayloadError("invalid_cost", f"response_cost must be a number, not {cost!r:.40}.")
        # repr is the shortest text that reads back as the same float: 0.000225, not 0.00022500000000000002.
        record["cost_usd"] = repr(cost) if isinstance(cost, float) else str(cost)
    tenant = next((slug for slug in _tenant_candidates(metadata) if slug in writable_slugs), None)
    if tenant is not None:
        record["tenant"] = tenant
    prompt_hash = _text(_mapping(metadata.get("requester_metadata")).get("chargeback_prompt_hash"))
    if prompt_hash_acceptable(prompt_hash):
        record["prompt_hash"] = prompt_hash
    return record


@dataclass
class LiteLlmIngestResult:
    ingest: IngestResult = field(default_factory=IngestResult)
    cache_hits: int = 0


def litellm_payloads_ingest(
    *,
    items: list[bytes | msgspec.Raw],
    scope_tenant_ids: list[int] | None,
    default_tenant_id: int | None,
    now: datetime | None = None,
) -> LiteLlmIngestResult:
    """Store LiteLLM payloads as usage records (source "litellm"); a bad payload is rejected alone."""
    result = LiteLlmIngestResult()
    decoded: list[tuple[int, LiteLlmPayload]] = []
    for index, item in enumerate(items):
        try:
            decoded.append((index, _PAYLOAD_DECODER.decode(item)))
        except msgspec.DecodeError as error:
            result.ingest.rejected += 1
            result.ingest.error(index, None, "invalid_json", f"The payload is not a JSON object: {error}")

    candidates = {slug for _, payload in decoded for slug in _tenant_candidates(_mapping(payload.metadata))}
    writable = (
        tenant_slugs_writable(slugs=candidates, scope_tenant_ids=scope_tenant_ids) if candidates else set()
    )

    records: list[dict[str, Any]] = []
    positions: list[int] = []
    for index, payload in decoded:
        try:
            records.append(payload_to_record(payload, writable_slugs=writable))
            positions.append(index)
        except CacheHit:
            result.cache_hits += 1
        except PayloadError as error:
            result.ingest.rejected += 1
            result.ingest.error(index, _event_id_or_none(payload), error.code, error.message)

    batch_size = max(1, settings.INGEST_MAX_RECORDS)
    for start in range(0, len(records), batch_size):
        stored = usage_records_ingest(
            items=records[start : start + batch_size],
            scope_tenant_ids=scope_tenant_ids,
            default_tenant_id=default_tenant_id,
            source=UsageSource.LITELLM,
            now=now,
        )
        # Errors name the payload's place in the request, not in the list of readable ones.
        for error in stored.errors:
            error["index"] = positions[start + error["index"]]
        result.ingest.merge(stored)
    result.ingest.errors.sort(key=lambda error: error["index"])
    if result.cache_hits:
        logger.info("LiteLLM callback: %d cache hits ignored (no provider call)", result.cache_hits)
    return result
