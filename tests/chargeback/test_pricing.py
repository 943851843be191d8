"""The price book: compiled integer prices must equal genai-prices' Decimal result, rounded half-even to a
nano, exactly; overrides, provider aliases, unpriced models and dated prices."""

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

import genai_prices
import numpy as np
import pytest
from genai_prices import Usage, types
from genai_prices.data_snapshot import find_provider_by_id, get_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from chargeback.models import PricingSource
from chargeback.pricing import (
    GENAI_PRICES_CACHE,
    GENAI_PRICES_VERSION,
    DecimalPrice,
    LinearPrice,
    PriceBook,
    TieredPrice,
    TokenBuckets,
    genai_prices_cost,
    normalize_model,
    normalize_provider,
)
from tenants.selectors import tenant_ancestor_ids
from tests.factories import PriceOverrideFactory, TenantFactory

pytestmark = pytest.mark.django_db

AT = datetime(2025, 11, 3, 14, 0, tzinfo=UTC)


def _nanos(amount: Decimal) -> int:
    return int((amount * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _reference_nanos(provider: str, model: str, buckets: TokenBuckets, at: datetime) -> int:
    """genai-prices' own answer, through its public API, rounded once half-even to a nano."""
    usage = Usage(
        input_tokens=buckets.input_total,
        cache_read_tokens=buckets.cached_input,
        cache_write_tokens=buckets.cache_write,
        output_tokens=buckets.output,
        output_reasoning_tokens=buckets.reasoning,
    )
    calculation = genai_prices.calc_price(usage, model, provider_id=provider, genai_request_timestamp=at)
    return _nanos(calculation.total_price)


def _book(*tenants, models=()):
    return PriceBook(tenant_chains={tenant.pk: tenant_ancestor_ids(tenant.pk) for tenant in tenants})


def _quote(book, tenant, provider, model, buckets, at=AT, reported=None):
    return book.quote(
        tenant_id=tenant.pk,
        provider=provider,
        model=model,
        at=at,
        buckets=buckets,
        reported_cost_nanos=reported,
    )


@pytest.fixture
def tenant():
    return TenantFactory()


# --- provider and model names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "normalised"),
    [
        ("gcp.gemini", "google"),
        ("gcp.vertex_ai", "google"),
        ("gcp.gen_ai", "google"),
        ("aws.bedrock", "aws"),
        ("azure.ai.openai", "azure"),
        ("x_ai", "x-ai"),
        ("mistral_ai", "mistral"),
        ("openai", "openai"),
        (" OpenAI ", "openai"),
        ("Anthropic", "anthropic"),
        ("my-gateway", "my-gateway"),
    ],
)
def test_normalize_provider(provider, normalised):
    assert normalize_provider(provider) == normalised


def test_every_alias_names_a_genai_prices_provider():
    from chargeback.pricing import PROVIDER_ALIASES

    providers = get_snapshot().providers
    for alias, provider_id in PROVIDER_ALIASES.items():
        found = find_provider_by_id(providers, provider_id)
        assert found is not None and found.id == provider_id, alias


@pytest.mark.parametrize(
    ("model", "provider", "normalised"),
    [
        ("openai/gpt-4o", "openai", "gpt-4o"),
        ("GPT-4o", "openai", "gpt-4o"),
        (" gpt-4o-mini ", "openai", "gpt-4o-mini"),
        ("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("google/gemini-2.5-pro", "google", "gemini-2.5-pro"),
        ("models/gemini-2.5-pro", "google", "gemini-2.5-pro"),
        ("gcp.gemini/gemini-2.5-flash", "google", "gemini-2.5-flash"),
        ("meta-llama/Llama-3.3-70B-Instruct", "together", "meta-llama/llama-3.3-70b-instruct"),
        ("openai/gpt-oss-20b", "groq", "openai/gpt-oss-20b"),  # the host's own id, not OpenAI's model
        ("gpt-4o", "openai", "gpt-4o"),
    ],
)
def test_normalize_model(model, provider, normalised):
    assert normalize_model(model, provider) == normalised


@pytest.mark.parametrize(
    ("provider", "model", "provider_and_model_id"),
    [
        ("gcp.gemini", "models/gemini-2.5-pro", "google:gemini-2.5-pro"),
        ("gcp.vertex_ai", "gemini-2.5-flash", "google:gemini-2.5-flash"),
        ("openai", "openai/gpt-4o", "openai:gpt-4o"),
        (
            "aws.bedrock",
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            "aws:regional.anthropic.claude-3-5-haiku-20241022-v1:0",
        ),
        ("azure.ai.openai", "gpt-4o", "azure:gpt-4o"),
        ("x_ai", "grok-4", "x-ai:grok-4-0709"),
        ("mistral_ai", "mistral-large-latest", "mistral:mistral-large"),
    ],
)
def test_provider_aliases_price_with_the_genai_prices_provider(
    tenant, provider, model, provider_and_model_id
):
    buckets = TokenBuckets(uncached_input=1_234, cached_input=100, output=567)
    provider_id, model_ref = (
        normalize_provider(provider),
        normalize_model(model, normalize_provider(provider)),
    )
    expected_provider, expected_model_id = provider_and_model_id.split(":", 1)
    assert GENAI_PRICES_CACHE.find(provider_id, model_ref)[0].id == expected_provider

    quote = _quote(_book(tenant, models={model_ref}), tenant, provider_id, model_ref, buckets)

    assert quote.pricing_source == PricingSource.GENAI_PRICES
    assert quote.model_id == expected_model_id
    assert quote.price_version == GENAI_PRICES_VERSION
    assert quote.list_cost_nanos == _reference_nanos(provider_id, model_ref, buckets, AT)


# --- real models x bucket combinations --------------------------------------------------------------

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "o3"),
    ("openai", "o4-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-3-5-haiku"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
]

BUCKETS = {
    "zero": TokenBuckets(),
    "input-only": TokenBuckets(uncached_input=1_000),
    "output-only": TokenBuckets(output=1_000),
    "one-token-each": TokenBuckets(1, 1, 1, 1, 1),
    "cached": TokenBuckets(uncached_input=176, cached_input=1_024, output=300),
    "cache-write": TokenBuckets(uncached_input=50, cache_write=2_000, output=500),
    "cache-read-and-write": TokenBuckets(
        uncached_input=50, cached_input=10_000, cache_write=2_000, output=500
    ),
    "reasoning": TokenBuckets(uncached_input=904, cached_input=4_096, output=2_500, reasoning=2_048),
    "all-reasoning": TokenBuckets(uncached_input=10, output=700, reasoning=700),
    "long-context-at-threshold": TokenBuckets(uncached_input=150_000, cached_input=50_000, output=1_000),
    "long-context-above-threshold": TokenBuckets(uncached_input=150_000, cached_input=50_001, output=1_000),
    "long-context-all-buckets": TokenBuckets(250_000, 100_000, 20_000, 8_000, 3_000),
    "million": TokenBuckets(uncached_input=1_000_000, output=1_000_000),
}


@pytest.mark.parametrize("buckets", list(BUCKETS.values()), ids=list(BUCKETS))
@pytest.mark.parametrize(("provider", "model"), MODELS, ids=[model for _, model in MODELS])
def test_price_book_equals_genai_prices(tenant, provider, model, buckets):
    quote = _quote(_book(tenant, models={model}), tenant, provider, model, buckets)

    assert quote.pricing_source == PricingSource.GENAI_PRICES
    assert quote.price_version == GENAI_PRICES_VERSION
    assert quote.list_cost_nanos == _reference_nanos(provider, model, buckets, AT)


@pytest.mark.parametrize(
    ("provider", "model", "buckets", "usd"),
    [
        # Anchors from the providers' published prices, independent of genai-prices' arithmetic.
        ("openai", "gpt-4o", TokenBuckets(uncached_input=1_000, output=1_000), "0.0125"),
        ("openai", "gpt-4o", TokenBuckets(cached_input=1_000_000), "1.25"),
        ("openai", "gpt-4o-mini", TokenBuckets(uncached_input=1_000_000, output=1_000_000), "0.75"),
        ("openai", "o4-mini", TokenBuckets(output=1_000, reasoning=800), "0.0044"),
        ("anthropic", "claude-sonnet-4-5", TokenBuckets(cache_write=100_000), "0.375"),
        (
            "anthropic",
            "claude-sonnet-4-5",
            TokenBuckets(cached_input=1_000_000),
            "0.6",
        ),  # > 200k: long context
        ("anthropic", "claude-3-5-haiku", TokenBuckets(1_000, 1_000, 1_000, 1_000), "0.00588"),
        ("google", "gemini-2.5-pro", TokenBuckets(uncached_input=200_000), "0.25"),
        ("google", "gemini-2.5-pro", TokenBuckets(uncached_input=200_001), "0.5000025"),
        ("google", "gemini-2.5-pro", TokenBuckets(uncached_input=200_000, output=1_000), "0.26"),
        ("google", "gemini-2.5-pro", TokenBuckets(uncached_input=200_001, output=1_000), "0.5150025"),
        ("google", "gemini-2.5-flash", TokenBuckets(uncached_input=1_000_000, output=400_000), "1.3"),
        ("openai", "gpt-4o", TokenBuckets(), "0"),
    ],
)
def test_known_prices(tenant, provider, model, buckets, usd):
    quote = _quote(_book(tenant, models={model}), tenant, provider, model, buckets)
    assert quote.list_cost_nanos == _nanos(Decimal(usd))


def test_zero_tokens_cost_zero_and_are_priced(tenant):
    quote = _quote(_book(tenant, models={"gpt-4o"}), tenant, "openai", "gpt-4o", TokenBuckets())
    assert quote.list_cost_nanos == 0
    assert quote.pricing_source == PricingSource.GENAI_PRICES


def test_the_long_context_tier_applies_to_cached_input_past_the_threshold(tenant):
    """Gemini 2.5 Pro's tier is chosen by the whole input, cache read included."""
    book = _book(tenant, models={"gemini-2.5-pro"})
    at_threshold = _quote(book, tenant, "google", "gemini-2.5-pro", BUCKETS["long-context-at-threshold"])
    above = _quote(book, tenant, "google", "gemini-2.5-pro", BUCKETS["long-context-above-threshold"])

    # 150k * 1.25 + 50k * 0.125 + 1k * 10 per million, then 150k * 2.5 + 50,001 * 0.25 + 1k * 15
    assert at_threshold.list_cost_nanos == 187_500_000 + 6_250_000 + 10_000_000
    assert above.list_cost_nanos == 375_000_000 + 12_500_250 + 15_000_000


def test_half_even_ties_are_rounded_to_even():
    """Groq's gpt-oss-20b reads cache at $0.0375/MTok: 37.5 nanos a token, an exact tie."""
    provider_info, model_info = GENAI_PRICES_CACHE.find("groq", "openai/gpt-oss-20b")
    price = GENAI_PRICES_CACHE.price(provider_info, model_info, AT)
    model_price = model_info.get_prices(AT)

    for cached, nanos in [(1, 38), (3, 112), (5, 188), (7, 262)]:
        buckets = TokenBuckets(cached_input=cached)
        assert genai_prices_cost(model_price, buckets) == Decimal(cached) * Decimal("0.0375") / 10**6
        assert price.cost_nanos(buckets) == nanos


def test_compiled_price_is_cached_per_active_price():
    provider_info, model_info = GENAI_PRICES_CACHE.find("openai", "gpt-4o")
    first = GENAI_PRICES_CACHE.price(provider_info, model_info, AT)
    assert GENAI_PRICES_CACHE.price(provider_info, model_info, AT + timedelta(days=30)) is first


# --- property: random bucket vectors, models and timestamps -----------------------------------------

PROPERTY_MODELS = [
    *MODELS,
    ("anthropic", "claude-3-5-haiku-latest"),
    ("deepseek", "deepseek-chat"),  # off-peak price by time of day
    ("perplexity", "sonar"),  # a per-request fee
    ("perplexity", "sonar-deep-research"),  # its own reasoning price
    ("openai", "gpt-5"),  # long-context tier at 272k
]

token_counts = st.one_of(
    st.integers(min_value=0, max_value=1_000),
    st.integers(min_value=0, max_value=400_000),
    st.integers(min_value=0, max_value=50_000_000),
)


@st.composite
def bucket_vectors(draw):
    output = draw(token_counts)
    return TokenBuckets(
        uncached_input=draw(token_counts),
        cached_input=draw(token_counts),
        cache_write=draw(token_counts),
        output=output,
        reasoning=draw(st.integers(min_value=0, max_value=output)),
    )


timestamps = st.datetimes(
    min_value=datetime(2024, 6, 1),
    max_value=datetime(2026, 12, 31),
    timezones=st.sampled_from([UTC, ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Tokyo")]),
)


@settings(max_examples=400, deadline=None)
@given(model=st.sampled_from(PROPERTY_MODELS), buckets=bucket_vectors(), at=timestamps)
def test_property_price_book_equals_genai_prices(model, buckets, at):
    provider, model_ref = model
    tenant = TenantFactory(slug="property")
    quote = _quote(_book(tenant, models={model_ref}), tenant, provider, model_ref, buckets, at=at)

    assert quote.pricing_source == PricingSource.GENAI_PRICES
    assert quote.list_cost_nanos == _reference_nanos(provider, model_ref, buckets, at)


@settings(max_examples=60, deadline=None)
@given(buckets=bucket_vectors(), at=timestamps)
def test_property_every_openai_anthropic_google_model_equals_genai_prices(buckets, at):
    """The compiled path against ModelPrice.calc_price for every price these providers list."""
    for provider in get_snapshot().providers:
        if provider.id not in {"openai", "anthropic", "google"}:
            continue
        for model_info in provider.models:
            compiled = GENAI_PRICES_CACHE.price(provider, model_info, at)
            expected = _nanos(genai_prices_cost(model_info.get_prices(at), buckets))
            assert compiled.cost_nanos(buckets) == expected, (provider.id, model_info.id)


# --- dated prices -----------------------------------------------------------------------------------


def test_o3_has_a_dated_price_change_in_genai_prices():
    _, model_info = GENAI_PRICES_CACHE.find("openai", "o3")
    assert isinstance(model_info.prices, list)
    constraints = [price.constraint for price in model_info.prices]
    assert types.StartDateConstraint(start_date=date(2025, 6, 10)) in constraints


@pytest.mark.parametrize(
    ("at", "input_per_mtok", "output_per_mtok"),
    [
        (datetime(2025, 6, 10, 0, 0, tzinfo=UTC), 2, 8),
        (datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC), 10, 40),
        # 01:00 in UTC+2 is still 9 June in UTC: the old price (genai-prices compares UTC dates).
        (datetime(2025, 6, 10, 1, 0, tzinfo=ZoneInfo("Europe/Berlin")), 10, 40),
        (datetime(2025, 6, 9, 20, 0, tzinfo=ZoneInfo("America/New_York")), 2, 8),
        (datetime(2025, 1, 1, tzinfo=UTC), 10, 40),
        (datetime(2026, 11, 1, tzinfo=UTC), 2, 8),
    ],
)
def test_a_dated_price_change_uses_the_price_of_the_requests_own_date(
    tenant, at, input_per_mtok, output_per_mtok
):
    buckets = TokenBuckets(uncached_input=1_000_000, output=1_000_000)
    book = _book(tenant, models={"o3"})
    # Price the other side of the change first, so a stale cache entry would show.
    _quote(book, tenant, "openai", "o3", buckets, at=datetime(2025, 1, 1, tzinfo=UTC))
    _quote(book, tenant, "openai", "o3", buckets, at=datetime(2025, 7, 1, tzinfo=UTC))

    quote = _quote(book, tenant, "openai", "o3", buckets, at=at)

    assert quote.list_cost_nanos == (input_per_mtok + output_per_mtok) * 10**9
    assert quote.list_cost_nanos == _reference_nanos("openai", "o3", buckets, at)


@pytest.mark.parametrize(
    "at",
    [
        datetime(2025, 3, 1, 0, 29, 59, tzinfo=UTC),  # off-peak
        datetime(2025, 3, 1, 0, 30, tzinfo=UTC),  # peak starts
        datetime(2025, 3, 1, 16, 29, 59, tzinfo=UTC),
        datetime(2025, 3, 1, 16, 30, tzinfo=UTC),  # off-peak again
        datetime(2025, 3, 1, 20, 0, tzinfo=ZoneInfo("Asia/Shanghai")),  # 12:00 UTC
    ],
)
def test_a_time_of_day_price_uses_the_requests_own_time(tenant, at):
    buckets = TokenBuckets(uncached_input=10_000, cached_input=5_000, output=2_000)
    book = _book(tenant, models={"deepseek-chat"})
    quote = _quote(book, tenant, "deepseek", "deepseek-chat", buckets, at=at)
    assert quote.list_cost_nanos == _reference_nanos("deepseek", "deepseek-chat", buckets, at)


@pytest.mark.parametrize("at", [datetime(2026, 10, 18, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)])
def test_a_price_finer_than_an_atto_usd_per_token_is_still_exact(tenant, at):
    """huggingface_together lists Llama 3.3 70B at $1.0399999999999998/MTok from 2026-10-19."""
    model = normalize_model("meta-llama/Llama-3.3-70B-Instruct")
    buckets = TokenBuckets(uncached_input=123_457, output=98_765)
    quote = _quote(_book(tenant, models={model}), tenant, "huggingface_together", model, buckets, at=at)

    assert quote.pricing_source == PricingSource.GENAI_PRICES
    assert quote.list_cost_nanos == _reference_nanos("huggingface_together", model, buckets, at)
    provider_info, model_info = GENAI_PRICES_CACHE.find("huggingface_together", model)
    expected_kind = DecimalPrice if at >= datetime(2026, 10, 19, tzinfo=UTC) else TieredPrice
    assert isinstance(GENAI_PRICES_CACHE.price(provider_info, model_info, at), expected_kind)


def _price_dates(model_info) -> list[datetime]:
    """AT, today, and the first moment of every dated price of this model."""
    dates = [AT, datetime(2026, 11, 29, 12, tzinfo=UTC)]
    if isinstance(model_info.prices, list):
        for conditional in model_info.prices:
            if isinstance(conditional.constraint, types.StartDateConstraint):
                start = conditional.constraint.start_date
                dates.append(datetime(start.year, start.month, start.day, tzinfo=UTC))
    return dates


def test_every_price_in_genai_prices_is_exact():
    """Each (provider, model, dated price) the package ships, on bucket vectors that cross every tier."""
    vectors = [
        TokenBuckets(),
        TokenBuckets(1, 1, 1, 1, 1),
        TokenBuckets(31_999, 1, 0, 1_001, 3),
        TokenBuckets(100_000, 28_001, 0, 7, 0),
        TokenBuckets(150_000, 49_999, 1, 12_345, 6_789),
        TokenBuckets(150_000, 50_000, 1, 12_345, 6_789),
        TokenBuckets(200_000, 56_001, 16_000, 1, 1),
        TokenBuckets(524_289, 0, 0, 0, 0),
        TokenBuckets(987_654, 123_456, 65_432, 250_000, 200_000),
    ]
    checked = 0
    for provider_info in get_snapshot().providers:
        for model_info in provider_info.models:
            for at in _price_dates(model_info):
                price = GENAI_PRICES_CACHE.price(provider_info, model_info, at)
                model_price = model_info.get_prices(at)
                for buckets in vectors:
                    expected = _nanos(genai_prices_cost(model_price, buckets))
                    assert price.cost_nanos(buckets) == expected, (
                        provider_info.id,
                        model_info.id,
                        at,
                        buckets,
                    )
                checked += 1
    assert checked > 1_000


# --- unpriced and client-reported -------------------------------------------------------------------


def test_an_unknown_model_is_unpriced_never_zero(tenant):
    quote = _quote(
        _book(tenant), tenant, "openai", "no-such-model-xyz", TokenBuckets(uncached_input=10, output=5)
    )

    assert quote.pricing_source == PricingSource.UNPRICED
    assert quote.list_cost_nanos is None


def test_an_unknown_provider_and_model_is_unpriced(tenant):
    quote = _quote(_book(tenant), tenant, "my-gateway", "house-model-7", TokenBuckets(output=5))
    assert quote.pricing_source == PricingSource.UNPRICED
    assert quote.list_cost_nanos is None


def test_an_unknown_model_with_a_client_reported_cost_uses_it(tenant):
    quote = _quote(
        _book(tenant), tenant, "openai", "no-such-model-xyz", TokenBuckets(output=5), reported=4_375_000
    )

    assert quote.pricing_source == PricingSource.CLIENT_REPORTED
    assert quote.list_cost_nanos == 4_375_000


def test_a_client_reported_zero_is_a_reported_cost(tenant):
    quote = _quote(_book(tenant), tenant, "openai", "no-such-model-xyz", TokenBuckets(output=5), reported=0)
    assert quote.pricing_source == PricingSource.CLIENT_REPORTED
    assert quote.list_cost_nanos == 0


def test_a_known_price_beats_a_client_reported_cost(tenant):
    buckets = TokenBuckets(uncached_input=1_000, output=1_000)
    quote = _quote(_book(tenant, models={"gpt-4o"}), tenant, "openai", "gpt-4o", buckets, reported=1)

    assert quote.pricing_source == PricingSource.GENAI_PRICES
    assert quote.list_cost_nanos == 12_500_000


def test_an_unknown_gateway_with_a_known_model_is_priced_by_the_model(tenant):
    buckets = TokenBuckets(uncached_input=1_000, output=1_000)
    quote = _quote(_book(tenant, models={"gpt-4o"}), tenant, "my-gateway", "gpt-4o", buckets)

    assert quote.model_id == "gpt-4o"
    assert quote.list_cost_nanos == 12_500_000


def test_a_hosted_model_whose_id_starts_with_a_provider_name_keeps_its_hosts_price(tenant):
    model = normalize_model("openai/gpt-oss-20b", "groq")
    assert model == "openai/gpt-oss-20b"
    quote = _quote(
        _book(tenant, models={model}), tenant, "groq", model, TokenBuckets(uncached_input=1_000_000)
    )
    assert quote.model_id == "openai/gpt-oss-20b"


# --- database overrides -----------------------------------------------------------------------------

FROM = datetime(2025, 1, 1, tzinfo=UTC)


def test_a_global_override_beats_genai_prices(tenant):
    override = PriceOverrideFactory(model="gpt-4o", valid_from=FROM, input_per_mtok=1, output_per_mtok=2)
    buckets = TokenBuckets(
        uncached_input=1_000, cached_input=1_000, cache_write=1_000, output=500, reasoning=100
    )

    quote = _quote(_book(tenant, models={"gpt-4o"}), tenant, "openai", "gpt-4o", buckets)

    assert quote.pricing_source == PricingSource.OVERRIDE
    assert quote.price_version == f"override {override.pk}"
    assert quote.model_id == "gpt-4o"
    # cache read, cache write and reasoning default to the input and output prices
    assert quote.list_cost_nanos == 3_000 * 1_000 + 500 * 2_000


def test_an_override_prices_each_bucket_and_the_request_fee(tenant):
    PriceOverrideFactory(
        model="gpt-4o",
        valid_from=FROM,
        input_per_mtok=Decimal("2.5"),
        cached_input_per_mtok=Decimal("0.25"),
        cache_write_per_mtok=Decimal("3.125"),
        output_per_mtok=Decimal("10"),
        reasoning_per_mtok=Decimal("12.000000001"),
        per_request=Decimal("0.000001"),
    )
    buckets = TokenBuckets(uncached_input=3, cached_input=5, cache_write=7, output=11, reasoning=2)

    quote = _quote(_book(tenant, models={"gpt-4o"}), tenant, "openai", "gpt-4o", buckets)

    expected = (
        Decimal("0.000001")
        + (
            3 * Decimal("2.5")
            + 5 * Decimal("0.25")
            + 7 * Decimal("3.125")
            + 9 * 10
            + 2 * Decimal("12.000000001")
        )
        / 10**6
    )
    assert quote.list_cost_nanos == _nanos(expected) == 1_000 + 7_500 + 1_250 + 21_875 + 90_000 + 24_000


def test_a_tenant_override_beats_a_global_one_and_the_nearest_ancestor_wins():
    org = TenantFactory(slug="org", kind="organization")
    team = TenantFactory(slug="team", parent=org)
    project = TenantFactory(slug="project", parent=team, kind="project")
    other = TenantFactory(slug="other")
    PriceOverrideFactory(model="gpt-4o", valid_from=FROM, input_per_mtok=1, output_per_mtok=1)
    org_price = PriceOverrideFactory(
        model="gpt-4o", tenant=org, valid_from=FROM, input_per_mtok=2, output_per_mtok=2
    )
    team_price = PriceOverrideFactory(
        model="gpt-4o", tenant=team, valid_from=FROM, input_per_mtok=3, output_per_mtok=3
    )
    buckets = TokenBuckets(uncached_input=1_000_000)
    book = _book(org, team, project, other, models={"gpt-4o"})

    assert _quote(book, project, "openai", "gpt-4o", buckets).price_version == f"override {team_price.pk}"
    assert _quote(book, team, "openai", "gpt-4o", buckets).list_cost_nanos == 3 * 10**9
    assert _quote(book, org, "openai", "gpt-4o", buckets).price_version == f"override {org_price.pk}"
    assert _quote(book, other, "openai", "gpt-4o", buckets).list_cost_nanos == 1 * 10**9


def test_a_siblings_override_in_the_same_batch_does_not_apply():
    org = TenantFactory(slug="org", kind="organization")
    team_a = TenantFactory(slug="team-a", parent=org)
    team_b = TenantFactory(slug="team-b", parent=org)
    PriceOverrideFactory(model="gpt-4o", tenant=team_b, valid_from=FROM, input_per_mtok=9, output_per_mtok=9)
    buckets = TokenBuckets(uncached_input=1_000, output=1_000)
    book = _book(team_a, team_b, models={"gpt-4o"})

    quote_a = _quote(book, team_a, "openai", "gpt-4o", buckets)
    quote_b = _quote(book, team_b, "openai", "gpt-4o", buckets)

    assert quote_a.pricing_source == PricingSource.GENAI_PRICES
    assert quote_a.list_cost_nanos == 12_500_000
    assert quote_b.pricing_source == PricingSource.OVERRIDE
    assert quote_b.list_cost_nanos == 18_000_000


def test_an_override_outside_the_batch_tenants_does_not_apply(tenant):
    stranger = TenantFactory(slug="stranger")
    PriceOverrideFactory(
        model="gpt-4o", tenant=stranger, valid_from=FROM, input_per_mtok=9, output_per_mtok=9
    )
    quote = _quote(_book(tenant, models={"gpt-4o"}), tenant, "openai", "gpt-4o", TokenBuckets(output=1))
    assert quote.pricing_source == PricingSource.GENAI_PRICES


def test_override_validity_is_half_open(tenant):
    start, end = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
    override = PriceOverrideFactory(
        model="gpt-4o", valid_from=start, valid_to=end, input_per_mtok=1, output_per_mtok=1
    )
    book = _book(tenant, models={"gpt-4o"})
    buckets = TokenBuckets(uncached_input=1_000)

    def source(at):
        return _quote(book, tenant, "openai", "gpt-4o", buckets, at=at).price_version

    assert source(start - timedelta(microseconds=1)) == GENAI_PRICES_VERSION
    assert source(start) == f"override {override.pk}"
    assert source(end - timedelta(microseconds=1)) == f"override {override.pk}"
    assert source(end) == GENAI_PRICES_VERSION


def test_the_latest_valid_override_wins(tenant):
    PriceOverrideFactory(model="gpt-4o", valid_from=datetime(2025, 1, 1, tzinfo=UTC), input_per_mtok=1)
    newer = PriceOverrideFactory(
        model="gpt-4o", valid_from=datetime(2025, 6, 1, tzinfo=UTC), input_per_mtok=2
    )
    book = _book(tenant, models={"gpt-4o"})
    buckets = TokenBuckets(uncached_input=1_000_000)

    assert _quote(
        book, tenant, "openai", "gpt-4o", buckets, at=datetime(2025, 5, 1, tzinfo=UTC)
    ).list_cost_nanos == (10**9)
    later = _quote(book, tenant, "openai", "gpt-4o", buckets, at=datetime(2025, 7, 1, tzinfo=UTC))
    assert later.price_version == f"override {newer.pk}"
    assert later.list_cost_nanos == 2 * 10**9


def test_a_provider_specific_override_applies_to_that_provider_only(tenant):
    PriceOverrideFactory(
        model="gpt-4o", provider="azure", valid_from=FROM, input_per_mtok=1, output_per_mtok=1
    )
    book = _book(tenant, models={"gpt-4o"})
    buckets = TokenBuckets(uncached_input=1_000_000)

    assert _quote(book, tenant, "azure", "gpt-4o", buckets).pricing_source == PricingSource.OVERRIDE
    openai = _quote(book, tenant, "openai", "gpt-4o", buckets)
    assert openai.pricing_source == PricingSource.GENAI_PRICES
    assert openai.list_cost_nanos == _nanos(Decimal("2.5"))


def test_an_override_makes_an_unknown_model_priced(tenant):
    PriceOverrideFactory(model="house-model-7", valid_from=FROM, input_per_mtok=1, output_per_mtok=4)
    quote = _quote(
        _book(tenant, models={"house-model-7"}),
        tenant,
        "my-gateway",
        "house-model-7",
        TokenBuckets(output=250),
    )
    assert quote.pricing_source == PricingSource.OVERRIDE
    assert quote.list_cost_nanos == 1_000_000


_PER_TOKEN = st.integers(0, 10**15)  # attos per token: up to $1,000 per million tokens


@st.composite
def _calls(draw):
    cache_write = draw(st.integers(0, 10**9))
    output = draw(st.integers(0, 10**9))
    return (
        draw(st.integers(0, 10**9)),
        draw(st.integers(0, 10**9)),
        cache_write,
        output,
        draw(st.integers(0, output)),
        draw(st.integers(0, cache_write)),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(*[_PER_TOKEN] * 6, st.integers(0, 10**15)),
    st.lists(_calls(), min_size=1, max_size=30),
    st.integers(1, 3 * 10**9),
)
def test_pricing_many_calls_at_once_equals_pricing_each(prices, calls, threshold):
    """The columns path of the optimisation reports: exact to the nano, call by call, up to the
    largest token counts a record may hold; with a second tier above `threshold` input tokens."""
    uncached, cached, cache_write, output, reasoning, cache_write_1h, per_request = prices
    base = LinearPrice(uncached, cached, cache_write, output, reasoning, per_request, cache_write_1h)
    higher = LinearPrice(
        2 * uncached, cached, cache_write, output + 1, reasoning, per_request, cache_write_1h
    )
    tokens = np.array(calls, dtype=np.int64)
    for price in (TieredPrice((), (base,)), TieredPrice((threshold,), (base, higher))):
        assert price.cost_nanos_many(tokens).tolist() == [
            price.cost_nanos(TokenBuckets(*call)) for call in calls
        ]


def test_price_periods_split_where_an_override_starts_and_none_for_time_of_day_prices():
    tenant = TenantFactory(slug="acme")
    change = AT + timedelta(days=3, hours=5)
    PriceOverrideFactory(
        tenant=tenant, model="gpt-4o", valid_from=change, valid_to=change + timedelta(days=2)
    )
    book = _book(tenant)
    start, end = AT, AT + timedelta(days=30)
    assert book.price_periods(provider="openai", model="gpt-4o", start=start, end=end) == [
        start, change, change + timedelta(days=2),
    ]  # fmt: skip
    assert book.price_periods(provider="openai", model="gpt-4o-mini", start=start, end=end) == [start]
    # DeepSeek's off-peak prices change twice a day: priced call by call.
    assert book.price_periods(provider="deepseek", model="deepseek-chat", start=start, end=end) is None
    # Within a period, every call of a tenant has the period's price.
    price = book.list_price(tenant_id=tenant.pk, provider="openai", model="gpt-4o", at=change)
    buckets = TokenBuckets(1_000, 0, 0, 10)
    assert (
        price.cost_nanos(buckets)
        == _quote(book, tenant, "openai", "gpt-4o", buckets, at=change + timedelta(hours=47)).list_cost_nanos
    )


def test_prices_too_large_for_int64_are_priced_exactly_in_python_integers():
    """A price of $10 million per million tokens (10^19 attos a token) on 10^9 tokens: 10^19 nanos,
    beyond int64. The columns path must not wrap around (it once returned a negative amount)."""
    huge = LinearPrice(10**19, 0, 0, 10**15, 0, 0, 0)
    calls = [(10**9, 0, 0, 10**9, 0, 0), (7, 0, 0, 3, 0, 0)]
    tiered = TieredPrice((1_000,), (LinearPrice(1, 1, 1, 1, 1, 0, 1), huge))
    for price in (TieredPrice((), (huge,)), tiered):
        costs = price.cost_nanos_many(np.array(calls, dtype=np.int64))
        assert costs.tolist() == [price.cost_nanos(TokenBuckets(*call)) for call in calls]
    assert TieredPrice((), (huge,)).cost_nanos_many(np.array(calls, dtype=np.int64))[0] == 10**19 + 10**15
