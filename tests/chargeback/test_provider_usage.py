"""Raw provider usage objects -> our disjoint token buckets.

Usage objects are built with the providers' own SDK types and serialised the way a client sends them;
genai-prices' `extract_usage` on the same response body is the cross-check for the whole input,
cache read, cache write, whole output and reasoning, and its `calc_price` for the cost.
"""

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

import genai_prices
import pytest
from anthropic.types import CacheCreation, Message, OutputTokensDetails
from anthropic.types import Usage as AnthropicUsage
from google.genai import types as gemini
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion
from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails
from openai.types.responses import Response, ResponseUsage
from openai.types.responses.response_usage import InputTokensDetails
from openai.types.responses.response_usage import OutputTokensDetails as ResponsesOutputTokensDetails

from chargeback.models import PricingSource
from chargeback.pricing import (
    GENAI_PRICES_CACHE,
    PriceBook,
    TokenBuckets,
    normalize_model,
    normalize_provider,
)
from chargeback.provider_usage import UsageObjectError, buckets_from_usage_object, usage_format
from tests.factories import TenantFactory

AT = datetime(2025, 11, 3, 14, 0, tzinfo=UTC)


def _dump(model) -> dict:
    """What a client sends: the SDK object as JSON, unset fields left out."""
    return model.model_dump(mode="json", exclude_none=True)


def _nanos(amount: Decimal) -> int:
    return int((amount * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


# --- response bodies as the providers' SDKs serialise them -----------------------------------------


def _openai_chat_body(model: str, usage: CompletionUsage) -> dict:
    completion = ChatCompletion(
        id="chatcmpl-1",
        choices=[],
        created=1_762_000_000,
        model=model,
        object="chat.completion",
        usage=usage,
    )
    return _dump(completion)


def _openai_responses_body(model: str, usage: ResponseUsage) -> dict:
    response = Response(
        id="resp_1",
        created_at=1_762_000_000,
        model=model,
        object="response",
        output=[],
        parallel_tool_calls=True,
        tool_choice="auto",
        tools=[],
        usage=usage,
    )
    return _dump(response)


def _anthropic_body(model: str, usage: AnthropicUsage) -> dict:
    message = Message(
        id="msg_1",
        content=[],
        model=model,
        role="assistant",
        stop_reason="end_turn",
        stop_sequence=None,
        type="message",
        usage=usage,
    )
    return _dump(message)


def _gemini_body(model: str, usage: gemini.GenerateContentResponseUsageMetadata) -> dict:
    """The REST (camelCase) response body, which is what genai-prices reads."""
    response = gemini.GenerateContentResponse(model_version=model, usage_metadata=usage)
    return response.model_dump(mode="json", by_alias=True, exclude_none=True)


def _chat_usage(prompt, completion, cached=None, reasoning=None, cache_write=None) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=(
            None
            if cached is None and cache_write is None
            else PromptTokensDetails(cached_tokens=cached, cache_write_tokens=cache_write, audio_tokens=0)
        ),
        completion_tokens_details=(
            None
            if reasoning is None
            else CompletionTokensDetails(
                reasoning_tokens=reasoning,
                audio_tokens=0,
                accepted_prediction_tokens=0,
                rejected_prediction_tokens=0,
            )
        ),
    )


def _responses_usage(input_tokens, output_tokens, cached=0, reasoning=0, cache_write=0) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=input_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached, cache_write_tokens=cache_write),
        output_tokens=output_tokens,
        output_tokens_details=ResponsesOutputTokensDetails(reasoning_tokens=reasoning),
        total_tokens=input_tokens + output_tokens,
    )


def _gemini_usage(prompt, candidates, cached=None, thoughts=None, tool_use=None):
    return gemini.GenerateContentResponseUsageMetadata(
        prompt_token_count=prompt,
        cached_content_token_count=cached,
        candidates_token_count=candidates,
        thoughts_token_count=thoughts,
        tool_use_prompt_token_count=tool_use,
        total_token_count=prompt + candidates + (thoughts or 0) + (tool_use or 0),
        prompt_tokens_details=[
            gemini.ModalityTokenCount(modality=gemini.MediaModality.TEXT, token_count=prompt)
        ],
    )


# (id, genai-prices provider id, api_flavor, response body, price_context, expected buckets)
CASES = [
    (
        "openai-chat-gpt-4o-cached",
        "openai",
        "chat",
        _openai_chat_body("gpt-4o-2024-08-06", _chat_usage(1200, 300, cached=1024, reasoning=0)),
        None,
        TokenBuckets(uncached_input=176, cached_input=1024, cache_write=0, output=300, reasoning=0),
    ),
    (
        "openai-chat-o4-mini-reasoning",
        "openai",
        "chat",
        _openai_chat_body("o4-mini-2025-04-16", _chat_usage(5000, 2500, cached=4096, reasoning=2048)),
        None,
        TokenBuckets(uncached_input=904, cached_input=4096, cache_write=0, output=2500, reasoning=2048),
    ),
    (
        "openai-chat-gpt-4o-mini-no-details",
        "openai",
        "chat",
        _openai_chat_body("gpt-4o-mini", _chat_usage(10, 5)),
        None,
        TokenBuckets(uncached_input=10, output=5),
    ),
    (
        "openai-chat-cache-write",
        "openai",
        "chat",
        _openai_chat_body("gpt-4o", _chat_usage(3000, 40, cached=1000, cache_write=1500)),
        None,
        TokenBuckets(uncached_input=500, cached_input=1000, cache_write=1500, output=40),
    ),
    (
        "openai-chat-zero",
        "openai",
        "chat",
        _openai_chat_body("gpt-4o", _chat_usage(0, 0, cached=0, reasoning=0)),
        None,
        TokenBuckets(),
    ),
    (
        "azure-chat-gpt-4o",
        "azure",
        "chat",
        _openai_chat_body("gpt-4o", _chat_usage(2048, 100, cached=1024, reasoning=0)),
        None,
        TokenBuckets(uncached_input=1024, cached_input=1024, output=100),
    ),
    (
        "openai-responses-o3-reasoning",
        "openai",
        "responses",
        _openai_responses_body(
            "o3-2025-04-16", _responses_usage(20_000, 3_000, cached=15_000, reasoning=2_500)
        ),
        None,
        TokenBuckets(uncached_input=5_000, cached_input=15_000, output=3_000, reasoning=2_500),
    ),
    (
        "openai-responses-gpt-4o",
        "openai",
        "responses",
        _openai_responses_body("gpt-4o", _responses_usage(700, 120)),
        None,
        TokenBuckets(uncached_input=700, output=120),
    ),
    (
        "openai-responses-cache-write",
        "openai",
        "responses",
        _openai_responses_body("gpt-4o-mini", _responses_usage(9_000, 1, cached=2_000, cache_write=6_000)),
        None,
        TokenBuckets(uncached_input=1_000, cached_input=2_000, cache_write=6_000, output=1),
    ),
    (
        "anthropic-sonnet-4-5-cache-read-and-write",
        "anthropic",
        "default",
        _anthropic_body(
            "claude-sonnet-4-5-20250929",
            AnthropicUsage(
                input_tokens=50,
                cache_creation_input_tokens=2_000,
                cache_read_input_tokens=10_000,
                cache_creation=CacheCreation(ephemeral_5m_input_tokens=2_000, ephemeral_1h_input_tokens=0),
                output_tokens=500,
                service_tier="standard",
            ),
        ),
        {"service_tier": "standard"},
        TokenBuckets(uncached_input=50, cached_input=10_000, cache_write=2_000, output=500),
    ),
    (
        "anthropic-sonnet-4-5-long-context",
        "anthropic",
        "default",
        _anthropic_body(
            "claude-sonnet-4-5",
            AnthropicUsage(
                input_tokens=1_000,
                cache_creation_input_tokens=500,
                cache_read_input_tokens=199_000,
                output_tokens=4_000,
                service_tier="standard",
            ),
        ),
        {"service_tier": "standard"},
        TokenBuckets(uncached_input=1_000, cached_input=199_000, cache_write=500, output=4_000),
    ),
    (
        "anthropic-sonnet-4-5-at-the-threshold",
        "anthropic",
        "default",
        _anthropic_body(
            "claude-sonnet-4-5",
            AnthropicUsage(input_tokens=500, cache_read_input_tokens=199_500, output_tokens=10),
        ),
        None,
        TokenBuckets(uncached_input=500, cached_input=199_500, output=10),
    ),
    (
        "anthropic-haiku-plain",
        "anthropic",
        "default",
        _anthropic_body("claude-3-5-haiku-20241022", AnthropicUsage(input_tokens=1_000, output_tokens=200)),
        None,
        TokenBuckets(uncached_input=1_000, output=200),
    ),
    (
        "anthropic-haiku-cache-write-priority",
        "anthropic",
        "default",
        _anthropic_body(
            "claude-3-5-haiku-latest",
            AnthropicUsage(
                input_tokens=3,
                cache_creation_input_tokens=4_096,
                cache_read_input_tokens=0,
                output_tokens=77,
                service_tier="priority",
            ),
        ),
        {"service_tier": "priority"},
        TokenBuckets(uncached_input=3, cache_write=4_096, output=77),
    ),
    (
        "gemini-2.5-pro-cached-thoughts",
        "google",
        "default",
        _gemini_body("gemini-2.5-pro", _gemini_usage(1_000, 300, cached=200, thoughts=50)),
        None,
        TokenBuckets(uncached_input=800, cached_input=200, output=350, reasoning=50),
    ),
    (
        "gemini-2.5-pro-long-context",
        "google",
        "default",
        _gemini_body("gemini-2.5-pro", _gemini_usage(250_000, 2_000, cached=100_000, thoughts=500)),
        None,
        TokenBuckets(uncached_input=150_000, cached_input=100_000, output=2_500, reasoning=500),
    ),
    (
        "gemini-2.5-pro-at-the-threshold",
        "google",
        "default",
        _gemini_body("gemini-2.5-pro", _gemini_usage(200_000, 1_000, thoughts=1_000)),
        None,
        TokenBuckets(uncached_input=200_000, output=2_000, reasoning=1_000),
    ),
    (
        "gemini-2.5-flash-no-thinking",
        "google",
        "default",
        _gemini_body("gemini-2.5-flash", _gemini_usage(4_321, 123)),
        None,
        TokenBuckets(uncached_input=4_321, output=123),
    ),
    (
        "gemini-2.5-flash-tool-use-prompt",
        "google",
        "default",
        _gemini_body("gemini-2.5-flash", _gemini_usage(1_000, 300, cached=200, thoughts=50, tool_use=70)),
        None,
        # Tool-use prompt tokens are input beside the prompt (genai-prices adds them to the input).
        TokenBuckets(uncached_input=870, cached_input=200, output=350, reasoning=50),
    ),
]


def _usage_object(body: dict) -> dict:
    return body.get("usage") or body["usageMetadata"]


def _model_ref(body: dict) -> str:
    return body.get("model") or body["modelVersion"]


def _assert_same_counts(extracted_usage, buckets: TokenBuckets):
    assert extracted_usage.reported_value("input_tokens") == buckets.input_total
    assert extracted_usage.reported_value("cache_read_tokens") == buckets.cached_input
    assert extracted_usage.reported_value("cache_write_tokens") == buckets.cache_write
    assert extracted_usage.reported_value("output_tokens") == buckets.output
    assert extracted_usage.reported_value("output_reasoning_tokens") == buckets.reasoning
    assert extracted_usage.reported_value("cache_write_1h_tokens") == buckets.cache_write_1h


@pytest.mark.parametrize(
    ("provider_id", "api_flavor", "body", "expected"),
    [(*case[1:4], case[5]) for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_buckets_match_genai_prices_extract_usage(provider_id, api_flavor, body, expected):
    buckets = buckets_from_usage_object(_usage_object(body))

    assert buckets == expected
    extracted = genai_prices.extract_usage(body, provider_id=provider_id, api_flavor=api_flavor)
    _assert_same_counts(extracted.usage, buckets)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("provider_id", "api_flavor", "body", "price_context"),
    [case[1:5] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_price_book_cost_equals_calc_price_on_the_extracted_usage(
    provider_id, api_flavor, body, price_context
):
    tenant = TenantFactory()
    buckets = buckets_from_usage_object(_usage_object(body))
    extracted = genai_prices.extract_usage(body, provider_id=provider_id, api_flavor=api_flavor)
    reference = extracted.calc_price(genai_request_timestamp=AT, price_context=price_context).total_price
    model = normalize_model(_model_ref(body))

    quote = PriceBook(tenant_chains={tenant.pk: [tenant.pk]}).quote(
        tenant_id=tenant.pk,
        provider=normalize_provider(provider_id),
        model=model,
        at=AT,
        buckets=buckets,
        reported_cost_nanos=None,
    )

    assert quote.pricing_source == PricingSource.GENAI_PRICES
    assert quote.model_id == extracted.model.id
    assert quote.list_cost_nanos == _nanos(reference)


def test_a_long_context_call_pays_the_higher_tier_on_every_input_bucket():
    """Anchors independent of genai-prices: Sonnet 4.5 above 200k input tokens costs $6/$0.60/$7.50/$22.50."""
    body = CASES[[case[0] for case in CASES].index("anthropic-sonnet-4-5-long-context")][3]
    buckets = buckets_from_usage_object(body["usage"])
    provider_info, model_info = GENAI_PRICES_CACHE.find("anthropic", "claude-sonnet-4-5")
    cost = GENAI_PRICES_CACHE.price(provider_info, model_info, AT).cost_nanos(buckets)
    # 1000 * 6 + 199000 * 0.6 + 500 * 7.5 + 4000 * 22.5 (USD per million tokens)
    assert cost == 1_000 * 6_000 + 199_000 * 600 + 500 * 7_500 + 4_000 * 22_500


# --- the same object in its snake_case (SDK) and camelCase (REST) forms ---------------------------


@pytest.mark.parametrize(
    "usage",
    [
        _gemini_usage(1_000, 300, cached=200, thoughts=50),
        _gemini_usage(1_000, 300, cached=200, thoughts=50, tool_use=70),
        _gemini_usage(10, 0),
        gemini.GenerateContentResponseUsageMetadata(prompt_token_count=5),
        gemini.GenerateContentResponseUsageMetadata(candidates_token_count=5, thoughts_token_count=2),
    ],
)
def test_gemini_snake_case_and_camel_case_forms_give_the_same_buckets(usage):
    snake = usage.model_dump(mode="json", exclude_none=True)
    camel = usage.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert set(snake).isdisjoint(camel)  # really two spellings

    assert usage_format(snake) == usage_format(camel) == "gemini"
    assert buckets_from_usage_object(snake) == buckets_from_usage_object(camel)


def test_gemini_thoughts_are_output_beside_the_candidates():
    usage = _dump(_gemini_usage(100, 40, thoughts=60))
    assert buckets_from_usage_object(usage) == TokenBuckets(uncached_input=100, output=100, reasoning=60)


def test_gemini_prompt_count_includes_the_cached_content():
    usage = _dump(_gemini_usage(100, 1, cached=100))
    assert buckets_from_usage_object(usage) == TokenBuckets(cached_input=100, output=1)


@pytest.mark.parametrize(
    ("usage", "expected_format"),
    [
        (_chat_usage(1, 2), "openai-chat"),
        (_chat_usage(1, 2, cached=0, reasoning=0), "openai-chat"),
        (_responses_usage(1, 2), "openai-responses"),
        (AnthropicUsage(input_tokens=1, output_tokens=2), "anthropic"),
        (AnthropicUsage(input_tokens=1, output_tokens=2, service_tier="batch"), "anthropic"),
        (AnthropicUsage(input_tokens=1, output_tokens=2, cache_read_input_tokens=0), "anthropic"),
        (_gemini_usage(1, 2), "gemini"),
    ],
)
def test_usage_format_recognises_each_sdk_shape(usage, expected_format):
    assert usage_format(_dump(usage)) == expected_format


# --- Anthropic details ------------------------------------------------------------------------------


def test_anthropic_input_tokens_exclude_cache_reads_and_writes():
    usage = AnthropicUsage(
        input_tokens=7, cache_creation_input_tokens=11, cache_read_input_tokens=13, output_tokens=17
    )
    buckets = buckets_from_usage_object(_dump(usage))
    assert buckets == TokenBuckets(uncached_input=7, cached_input=13, cache_write=11, output=17)
    assert buckets.input_total == 31


def test_anthropic_cache_creation_detail_is_the_cache_write_when_the_total_is_missing():
    usage = {
        "input_tokens": 7,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 20},
        "output_tokens": 3,
    }
    assert buckets_from_usage_object(usage) == TokenBuckets(
        uncached_input=7, cache_write=120, output=3, cache_write_1h=20
    )


def test_anthropic_thinking_tokens_are_reasoning_within_the_output():
    body = _anthropic_body(
        "claude-sonnet-4-5",
        AnthropicUsage(
            input_tokens=10,
            output_tokens=900,
            output_tokens_details=OutputTokensDetails(thinking_tokens=600),
            service_tier="standard",
        ),
    )
    buckets = buckets_from_usage_object(body["usage"])

    assert buckets == TokenBuckets(uncached_input=10, output=900, reasoning=600)
    _assert_same_counts(genai_prices.extract_usage(body, provider_id="anthropic").usage, buckets)


def test_anthropic_one_hour_cache_writes_cost_what_genai_prices_charges():
    body = _anthropic_body(
        "claude-sonnet-4-5",
        AnthropicUsage(
            input_tokens=10,
            cache_creation_input_tokens=1_000,
            cache_creation=CacheCreation(ephemeral_5m_input_tokens=0, ephemeral_1h_input_tokens=1_000),
            output_tokens=5,
        ),
    )
    extracted = genai_prices.extract_usage(body, provider_id="anthropic")
    buckets = buckets_from_usage_object(body["usage"])
    provider_info, model_info = GENAI_PRICES_CACHE.find("anthropic", "claude-sonnet-4-5")

    ours = GENAI_PRICES_CACHE.price(provider_info, model_info, AT).cost_nanos(buckets)
    assert ours == _nanos(extracted.calc_price(genai_request_timestamp=AT).total_price)


# --- properties over random counts, per SDK shape -------------------------------------------------

counts = st.integers(min_value=0, max_value=400_000)


def _compiled_cost(provider_id: str, model_ref: str, buckets: TokenBuckets) -> tuple[str, int]:
    provider_info, model_info = GENAI_PRICES_CACHE.find(
        normalize_provider(provider_id), normalize_model(model_ref)
    )
    cost = GENAI_PRICES_CACHE.price(provider_info, model_info, AT).cost_nanos(buckets)
    return model_info.id, cost


def _check_against_genai_prices(body, provider_id, api_flavor, buckets, price_context=None):
    extracted = genai_prices.extract_usage(body, provider_id=provider_id, api_flavor=api_flavor)
    _assert_same_counts(extracted.usage, buckets)
    reference = extracted.calc_price(genai_request_timestamp=AT, price_context=price_context)
    model_id, cost = _compiled_cost(provider_id, _model_ref(body), buckets)
    assert model_id == extracted.model.id
    assert cost == _nanos(reference.total_price)


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(["gpt-4o", "gpt-4o-mini", "o3", "o4-mini"]),
    uncached=counts,
    cached=counts,
    cache_write=st.integers(min_value=0, max_value=50_000),
    output=counts,
    reasoning_share=st.fractions(min_value=0, max_value=1),
)
def test_openai_chat_usage_property(model, uncached, cached, cache_write, output, reasoning_share):
    reasoning = int(output * reasoning_share)
    prompt = uncached + cached + cache_write
    body = _openai_chat_body(
        model, _chat_usage(prompt, output, cached=cached, cache_write=cache_write, reasoning=reasoning)
    )
    buckets = buckets_from_usage_object(body["usage"])
    assert buckets == TokenBuckets(uncached, cached, cache_write, output, reasoning)
    _check_against_genai_prices(body, "openai", "chat", buckets)


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(["gpt-4o", "o3", "o4-mini"]),
    uncached=counts,
    cached=counts,
    cache_write=st.integers(min_value=0, max_value=50_000),
    output=counts,
    reasoning_share=st.fractions(min_value=0, max_value=1),
)
def test_openai_responses_usage_property(model, uncached, cached, cache_write, output, reasoning_share):
    reasoning = int(output * reasoning_share)
    usage = _responses_usage(
        uncached + cached + cache_write, output, cached=cached, reasoning=reasoning, cache_write=cache_write
    )
    body = _openai_responses_body(model, usage)
    buckets = buckets_from_usage_object(body["usage"])
    assert buckets == TokenBuckets(uncached, cached, cache_write, output, reasoning)
    _check_against_genai_prices(body, "openai", "responses", buckets)


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(["claude-sonnet-4-5-20250929", "claude-3-5-haiku-20241022"]),
    uncached=counts,
    cached=counts,
    cache_write=counts,
    output=counts,
    service_tier=st.sampled_from([None, "standard", "priority", "batch"]),
)
def test_anthropic_usage_property(model, uncached, cached, cache_write, output, service_tier):
    usage = AnthropicUsage(
        input_tokens=uncached,
        cache_read_input_tokens=cached,
        cache_creation_input_tokens=cache_write,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=cache_write, ephemeral_1h_input_tokens=0),
        output_tokens=output,
        service_tier=service_tier,
    )
    body = _anthropic_body(model, usage)
    buckets = buckets_from_usage_object(body["usage"])
    assert buckets == TokenBuckets(uncached, cached, cache_write, output, 0)
    context = {"service_tier": service_tier} if service_tier else None
    _check_against_genai_prices(body, "anthropic", "default", buckets, context)


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(["gemini-2.5-pro", "gemini-2.5-flash"]),
    uncached=counts,
    cached=counts,
    candidates=counts,
    thoughts=st.one_of(st.none(), counts),
    tool_use=st.one_of(st.none(), st.integers(min_value=0, max_value=5_000)),
)
def test_gemini_usage_property(model, uncached, cached, candidates, thoughts, tool_use):
    usage = _gemini_usage(uncached + cached, candidates, cached=cached, thoughts=thoughts, tool_use=tool_use)
    body = _gemini_body(model, usage)
    buckets = buckets_from_usage_object(body["usageMetadata"])
    snake = buckets_from_usage_object(usage.model_dump(mode="json", exclude_none=True))

    assert snake == buckets
    assert buckets == TokenBuckets(
        uncached + (tool_use or 0), cached, 0, candidates + (thoughts or 0), thoughts or 0
    )
    _check_against_genai_prices(body, "google", "default", buckets)


# --- objects we refuse ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "usage",
    [
        # negative counts, in every shape (pydantic lets an SDK object hold them)
        _dump(CompletionUsage(prompt_tokens=-1, completion_tokens=5, total_tokens=4)),
        _dump(_chat_usage(10, 5, cached=-1)),
        _dump(_chat_usage(10, 5, reasoning=-1)),
        _dump(_responses_usage(10, -5)),
        _dump(AnthropicUsage(input_tokens=-5, output_tokens=1)),
        _dump(AnthropicUsage(input_tokens=5, cache_read_input_tokens=-1, output_tokens=1)),
        {"input_tokens": 1, "cache_creation": {"ephemeral_5m_input_tokens": -3}, "output_tokens": 1},
        _dump(_gemini_usage(10, 5, thoughts=-1)),
        {"promptTokenCount": -10, "candidatesTokenCount": 5},
        # parts larger than their wholes
        _dump(_chat_usage(10, 5, cached=11)),
        _dump(_chat_usage(10, 5, cached=6, cache_write=5)),
        _dump(_chat_usage(10, 5, reasoning=6)),
        _dump(_responses_usage(10, 5, cached=11)),
        _dump(_responses_usage(10, 5, reasoning=6)),
        _dump(_gemini_usage(10, 5, cached=11)),
        {"promptTokenCount": 10, "cachedContentTokenCount": 11},
        {"input_tokens": 1, "output_tokens": 5, "output_tokens_details": {"thinking_tokens": 6}},
        # counts that are not integers
        {"prompt_tokens": 1.5, "completion_tokens": 1},
        {"prompt_tokens": "10", "completion_tokens": 1},
        {"prompt_tokens": True, "completion_tokens": 1},
        {"input_tokens": 10, "output_tokens": None, "cache_read_input_tokens": [1]},
        # shapes we do not know
        {},
        {"tokens": 10},
        {"total_tokens": 10},
        {"usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    ],
)
def test_invalid_usage_objects_raise(usage):
    with pytest.raises(UsageObjectError):
        buckets_from_usage_object(usage)


@pytest.mark.parametrize("usage", [None, [], "prompt_tokens", 12, [("prompt_tokens", 1)]])
def test_a_usage_that_is_not_an_object_raises(usage):
    with pytest.raises(UsageObjectError):
        buckets_from_usage_object(usage)


def test_genai_prices_also_refuses_a_cache_read_larger_than_the_input():
    """The same rule on both sides: a part larger than its whole is an error, never a negative price."""
    body = _openai_chat_body("gpt-4o", _chat_usage(10, 5, cached=11))
    extracted = genai_prices.extract_usage(body, provider_id="openai", api_flavor="chat")
    with pytest.raises(ValueError):
        extracted.calc_price(genai_request_timestamp=AT)
    with pytest.raises(UsageObjectError):
        buckets_from_usage_object(body["usage"])
