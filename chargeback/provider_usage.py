"""Map a provider's raw `usage` object onto our disjoint token buckets.

The rules (see DESIGN.md): OpenAI's prompt tokens include cached ones and its completion tokens
include reasoning; Anthropic's input tokens exclude cache reads and writes; Gemini's thoughts are
output beside the candidates, and its prompt count includes cached content.
"""

from collections.abc import Mapping
from typing import Any

from chargeback.pricing import TokenBuckets


class UsageObjectError(ValueError):
    """The usage object is not one we recognise, or its numbers contradict each other."""


def _count(mapping: Mapping[str, Any] | None, *names: str) -> int:
    """The first present count among `names` (snake_case or Gemini's camelCase twin)."""
    if not isinstance(mapping, Mapping):
        return 0
    for name in names:
        value = mapping.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageObjectError(f"usage.{name} must be a non-negative integer")
        return value
    return 0


def _details(usage: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = usage.get(name)
    return value if isinstance(value, Mapping) else None


def _from_whole(
    *, input_total: int, cached: int, cache_write: int, output_total: int, reasoning: int
) -> TokenBuckets:
    if cached + cache_write > input_total:
        raise UsageObjectError("cached and cache-write tokens exceed the input tokens")
    if reasoning > output_total:
        raise UsageObjectError("reasoning tokens exceed the output tokens")
    return TokenBuckets(
        uncached_input=input_total - cached - cache_write,
        cached_input=cached,
        cache_write=cache_write,
        output=output_total,
        reasoning=reasoning,
    )


def _openai_chat(usage: Mapping[str, Any]) -> TokenBuckets:
    prompt_details = _details(usage, "prompt_tokens_details")
    completion_details = _details(usage, "completion_tokens_details")
    return _from_whole(
        input_total=_count(usage, "prompt_tokens"),
        cached=_count(prompt_details, "cached_tokens"),
        cache_write=_count(prompt_details, "cache_write_tokens"),
        output_total=_count(usage, "completion_tokens"),
        reasoning=_count(completion_details, "reasoning_tokens"),
    )


def _openai_responses(usage: Mapping[str, Any]) -> TokenBuckets:
    input_details = _details(usage, "input_tokens_details")
    output_details = _details(usage, "output_tokens_details")
    return _from_whole(
        input_total=_count(usage, "input_tokens"),
        cached=_count(input_details, "cached_tokens"),
        cache_write=_count(input_details, "cache_write_tokens"),
        output_total=_count(usage, "output_tokens"),
        reasoning=_count(output_details, "reasoning_tokens"),
    )


def _anthropic(usage: Mapping[str, Any]) -> TokenBuckets:
    creation = _details(usage, "cache_creation")
    cache_write_1h = _count(creation, "ephemeral_1h_input_tokens")
    cache_write = _count(usage, "cache_creation_input_tokens") or (
        _count(creation, "ephemeral_5m_input_tokens") + cache_write_1h
    )
    if cache_write_1h > cache_write:
        raise UsageObjectError("one-hour cache writes exceed cache_creation_input_tokens")
    output = _count(usage, "output_tokens")
    # Extended thinking is part of output_tokens (genai-prices reads it as output reasoning tokens).
    reasoning = _count(_details(usage, "output_tokens_details"), "thinking_tokens")
    if reasoning > output:
        raise UsageObjectError("thinking tokens exceed the output tokens")
    return TokenBuckets(
        uncached_input=_count(usage, "input_tokens"),
        cached_input=_count(usage, "cache_read_input_tokens"),
        cache_write=cache_write,
        output=output,
        reasoning=reasoning,
        cache_write_1h=cache_write_1h,
    )


def _gemini(usage: Mapping[str, Any]) -> TokenBuckets:
    thoughts = _count(usage, "thoughts_token_count", "thoughtsTokenCount")
    # Tool-use prompt tokens are input beside the prompt, not in it (genai-prices adds them to the input).
    tool_use = _count(usage, "tool_use_prompt_token_count", "toolUsePromptTokenCount")
    return _from_whole(
        input_total=_count(usage, "prompt_token_count", "promptTokenCount") + tool_use,
        cached=_count(usage, "cached_content_token_count", "cachedContentTokenCount"),
        cache_write=0,
        output_total=_count(usage, "candidates_token_count", "candidatesTokenCount") + thoughts,
        reasoning=thoughts,
    )


def usage_format(usage: Mapping[str, Any]) -> str:
    """Which provider's shape this usage object has."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return "openai-chat"
    if any(
        key in usage
        for key in (
            "prompt_token_count",
            "promptTokenCount",
            "candidates_token_count",
            "candidatesTokenCount",
            "total_token_count",
            "totalTokenCount",
        )
    ):
        return "gemini"
    if any(
        key in usage
        for key in (
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cache_creation",
            "service_tier",
            "server_tool_use",
        )
    ):
        return "anthropic"
    if "input_tokens" in usage or "output_tokens" in usage:
        # OpenAI Responses always sends total_tokens and details; a bare {input, output} pair means
        # the same in both shapes.
        return (
            "openai-responses" if "total_tokens" in usage or "input_tokens_details" in usage else "anthropic"
        )
    raise UsageObjectError("unrecognised usage object: expected OpenAI, Anthropic or Gemini token fields")


_MAPPERS = {
    "openai-chat": _openai_chat,
    "openai-responses": _openai_responses,
    "anthropic": _anthropic,
    "gemini": _gemini,
}


def buckets_from_usage_object(usage: Mapping[str, Any]) -> TokenBuckets:
    """Token buckets for a raw provider usage object; UsageObjectError when it cannot be read."""
    if not isinstance(usage, Mapping):
        raise UsageObjectError("usage must be an object")
    return _MAPPERS[usage_format(usage)](usage)
