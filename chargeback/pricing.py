"""The price book: the one place that turns (tenant, provider, model, time, tokens) into a cost.

Order: our database overrides (tenant-specific, nearest ancestor first, then global), then
genai-prices for the request's own timestamp, then a client-reported cost, else unpriced.

genai-prices' `calc_price` costs a few hundred µs a call, too slow for the ingest hot path. Its
cost is linear in each token bucket once the price tier is fixed, so for each distinct
(provider, model, active price) we evaluate genai-prices itself on unit usages once, keep the
per-token prices as exact integers of atto-USD, and price every record with integer arithmetic.
The result equals genai-prices' Decimal total rounded half-even to a nano (tests compare them).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import time as dt_time
from decimal import Decimal, localcontext
from typing import NamedTuple

import genai_prices
import numpy as np
from django.db.models import Q
from genai_prices import Usage, types
from genai_prices.data_snapshot import get_snapshot

from chargeback import money
from chargeback.models import PriceOverride, PricingSource

GENAI_PRICES_VERSION = f"genai-prices {genai_prices.__version__}"

# OpenTelemetry, LiteLLM and SDK spellings of providers -> genai-prices provider ids.
PROVIDER_ALIASES = {
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "vertex": "google",
    "google_genai": "google",
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "azure_openai": "azure",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
}
_MODEL_PREFIXES_TO_STRIP = {"models"}


def normalize_provider(provider: str) -> str:
    key = provider.strip().lower()
    return PROVIDER_ALIASES.get(key, key)


def normalize_model(model: str, provider: str = "") -> str:
    """Lowercase, and drop a leading segment naming the call's own provider (or 'models/'):
    'openai/gpt-4o' from openai -> 'gpt-4o', but Groq's 'openai/gpt-oss-20b' stays whole."""
    name = model.strip().lower()
    head, separator, tail = name.partition("/")
    if (
        separator
        and tail
        and (head in _MODEL_PREFIXES_TO_STRIP or (provider and normalize_provider(head) == provider))
    ):
        return tail
    return name


class TokenBuckets(NamedTuple):
    """Disjoint token counts of one call. (A named tuple: made once per ingested record, and
    several times cheaper to create than a frozen dataclass.)"""

    uncached_input: int = 0
    cached_input: int = 0
    cache_write: int = 0  # all cache writes
    output: int = 0  # whole output, reasoning included
    reasoning: int = 0  # part of output
    cache_write_1h: int = 0  # part of cache_write with a one-hour lifetime (Anthropic), priced apart

    @property
    def input_total(self) -> int:
        return self.uncached_input + self.cached_input + self.cache_write


# Token counts up to which LinearPrice.cost_nanos_many keeps int64 exact (MAX_TOKENS of a record).
MAX_TOKENS_PRICED_AT_ONCE = 10**9


@dataclass(frozen=True, slots=True)
class LinearPrice:
    """Per-token prices in atto-USD for one price tier, plus a per-request fee."""

    uncached_input: int
    cached_input: int
    cache_write: int  # five-minute (default) cache writes
    output: int  # non-reasoning output
    reasoning: int
    per_request: int
    cache_write_1h: int

    def cost_attos(self, buckets: TokenBuckets) -> int:
        return (
            self.per_request
            + self.uncached_input * buckets.uncached_input
            + self.cached_input * buckets.cached_input
            + self.cache_write * (buckets.cache_write - buckets.cache_write_1h)
            + self.cache_write_1h * buckets.cache_write_1h
            + self.output * (buckets.output - buckets.reasoning)
            + self.reasoning * buckets.reasoning
        )

    def cost_nanos_many(self, tokens: np.ndarray) -> np.ndarray:
        """attos_to_nanos(cost_attos) of every row of `tokens` (int64, one column per TokenBuckets
        field, in its order), exactly: each per-token price is split into whole nanos and the attos
        left over, so that int64 holds every product of a price part and a count (counts up to
        MAX_TOKENS, 10^9: the leftover attos sum to less than 7 x 10^18). Prices or counts too
        large for that (a price of millions of dollars per million tokens) are priced one row at a
        time in Python integers, and the array holds Python integers."""
        uncached, cached, cache_write, output, reasoning, cache_write_1h = tokens.T
        terms = (
            (self.uncached_input, uncached),
            (self.cached_input, cached),
            (self.cache_write, cache_write - cache_write_1h),
            (self.cache_write_1h, cache_write_1h),
            (self.output, output - reasoning),
            (self.reasoning, reasoning),
        )
        per_request_nanos, per_request_attos = divmod(self.per_request, money.ATTOS_PER_NANO)
        largest = int(tokens.max()) if len(tokens) else 0
        most_nanos = per_request_nanos + sum(price // money.ATTOS_PER_NANO for price, _ in terms)
        if largest > MAX_TOKENS_PRICED_AT_ONCE or largest * most_nanos >= 2**62:
            return np.array(
                [money.attos_to_nanos(self.cost_attos(TokenBuckets(*row))) for row in tokens.tolist()],
                dtype=object,
            )
        whole = np.full(len(tokens), per_request_nanos, dtype=np.int64)
        attos = np.full(len(tokens), per_request_attos, dtype=np.int64)
        for price, counts in terms:
            price_nanos, price_attos = divmod(price, money.ATTOS_PER_NANO)
            whole += price_nanos * counts
            attos += price_attos * counts
        return money.attos_to_nanos_many(whole, attos)


@dataclass(frozen=True, slots=True)
class TieredPrice:
    """Prices by tier: tier k applies when total input tokens exceed thresholds[k-1] (a cliff)."""

    thresholds: tuple[int, ...]
    tiers: tuple[LinearPrice, ...]

    def cost_nanos(self, buckets: TokenBuckets) -> int:
        tiers = self.tiers
        tier = tiers[bisect.bisect_left(self.thresholds, buckets.input_total)] if len(tiers) > 1 else tiers[0]
        return money.attos_to_nanos(tier.cost_attos(buckets))

    def cost_nanos_many(self, tokens: np.ndarray) -> np.ndarray:
        """cost_nanos of every row of `tokens` (see LinearPrice.cost_nanos_many)."""
        if len(self.tiers) == 1:
            return self.tiers[0].cost_nanos_many(tokens)
        input_total = tokens[:, 0] + tokens[:, 1] + tokens[:, 2]
        tier_of = np.searchsorted(np.array(self.thresholds, dtype=np.int64), input_total, side="left")
        parts = [(tier_of == index, tier) for index, tier in enumerate(self.tiers)]
        priced = [(rows, tier.cost_nanos_many(tokens[rows])) for rows, tier in parts if rows.any()]
        costs = np.zeros(
            len(tokens), dtype=object if any(part.dtype == object for _, part in priced) else np.int64
        )
        for rows, part in priced:
            costs[rows] = part
        return costs


@dataclass(frozen=True, slots=True)
class DecimalPrice:
    """A genai-prices price finer than an atto-USD per token (e.g. $1.0399999999999998/MTok), which the
    integer path cannot hold exactly: priced by genai-prices' own Decimal arithmetic (slow, but rare)."""

    model_price: types.ModelPrice

    def cost_nanos(self, buckets: TokenBuckets) -> int:
        return money.usd_to_nanos(genai_prices_cost(self.model_price, buckets))

    def cost_nanos_many(self, tokens: np.ndarray) -> np.ndarray:
        """cost_nanos of every row of `tokens`, one at a time (this price is rare)."""
        return np.array([self.cost_nanos(TokenBuckets(*row)) for row in tokens.tolist()], dtype=object)


class Quote(NamedTuple):
    list_cost_nanos: int | None
    pricing_source: str
    price_version: str
    model_id: str


def _genai_usage(buckets: TokenBuckets) -> Usage:
    return Usage(
        input_tokens=buckets.input_total,
        cache_read_tokens=buckets.cached_input,
        cache_write_tokens=buckets.cache_write,
        cache_write_1h_tokens=buckets.cache_write_1h,
        output_tokens=buckets.output,
        output_reasoning_tokens=buckets.reasoning,
    )


def genai_prices_cost(model_price: types.ModelPrice, buckets: TokenBuckets) -> Decimal:
    """genai-prices' own Decimal total for these buckets (the reference our integer path must equal)."""
    return model_price.calc_price(_genai_usage(buckets))["total_price"]


def _compile_model_price(model_price: types.ModelPrice) -> TieredPrice:
    thresholds = sorted(
        {
            tier.start
            for value in vars(model_price).values()
            if isinstance(value, types.TieredPrices)
            for tier in value.tiers
        }
    )

    def cost(**buckets: int) -> Decimal:
        return genai_prices_cost(model_price, TokenBuckets(**buckets))

    fee = cost()
    tiers = []
    with localcontext() as context:
        context.prec = 60
        for index in range(len(thresholds) + 1):
            # An input size that selects this tier; 0 when the first tier starts at 0 tokens, so that
            # the base tier only ever sees calls without input.
            size = thresholds[index - 1] + 1 if index else min(1, thresholds[0]) if thresholds else 1
            base = cost(uncached_input=size)

            def per_input_token(total: Decimal, size: int = size) -> int:
                return money.usd_to_attos_exact((total - fee) / size) if size else 0

            tiers.append(
                LinearPrice(
                    uncached_input=per_input_token(base),
                    cached_input=per_input_token(cost(cached_input=size)),
                    cache_write=per_input_token(cost(cache_write=size)),
                    cache_write_1h=per_input_token(cost(cache_write=size, cache_write_1h=size)),
                    output=money.usd_to_attos_exact(cost(uncached_input=size, output=1) - base),
                    reasoning=money.usd_to_attos_exact(
                        cost(uncached_input=size, output=1, reasoning=1) - base
                    ),
                    per_request=money.usd_to_attos_exact(fee),
                )
            )
    return TieredPrice(thresholds=tuple(thresholds), tiers=tuple(tiers))


class _GenaiPricesCache:
    """Process-wide cache of genai-prices lookups and compiled prices (the data is immutable)."""

    def __init__(self):
        self._models: dict[tuple[str, str], tuple[types.Provider, types.ModelInfo] | None] = {}
        self._compiled: dict[tuple[str, str, int], TieredPrice | DecimalPrice] = {}

    def find(self, provider: str, model: str) -> tuple[types.Provider, types.ModelInfo] | None:
        key = (provider, model)
        if key not in self._models:
            snapshot = get_snapshot()
            try:
                found = snapshot.find_provider_model(model, None, provider, None)
            except LookupError:
                # A provider genai-prices does not know (a gateway, say): match on the model alone.
                try:
                    found = snapshot.find_provider_model(model, None, None, None)
                except LookupError:
                    found = None
            self._models[key] = found
        return self._models[key]

    def price(
        self, provider_info: types.Provider, model_info: types.ModelInfo, at: datetime
    ) -> TieredPrice | DecimalPrice:
        prices = model_info.prices
        active = 0
        if isinstance(prices, list):
            # The same rule as ModelInfo.get_prices: the last active conditional price wins.
            for index in range(len(prices) - 1, -1, -1):
                constraint = prices[index].constraint
                if constraint is None or constraint.active(at):
                    active = index
                    break
        key = (provider_info.id, model_info.id, active)
        compiled = self._compiled.get(key)
        if compiled is None:
            model_price = model_info.get_prices(at)
            try:
                compiled = _compile_model_price(model_price)
            except ValueError:  # a unit price finer than an atto-USD
                compiled = DecimalPrice(model_price)
            self._compiled[key] = compiled
        return compiled


GENAI_PRICES_CACHE = _GenaiPricesCache()


def override_linear_price(override: PriceOverride) -> LinearPrice:
    to_attos = money.usd_per_mtok_to_attos_per_token
    input_price = to_attos(override.input_per_mtok)
    output_price = to_attos(override.output_per_mtok)

    def or_default(value, default):
        return default if value is None else to_attos(value)

    return LinearPrice(
        uncached_input=input_price,
        cached_input=or_default(override.cached_input_per_mtok, input_price),
        cache_write=or_default(override.cache_write_per_mtok, input_price),
        output=output_price,
        reasoning=or_default(override.reasoning_per_mtok, output_price),
        per_request=money.usd_to_attos_exact(override.per_request),
        cache_write_1h=or_default(override.cache_write_per_mtok, input_price),
    )


class PriceBook:
    """Prices for one ingest request or re-rating run: overrides are loaded once, up front.

    `tenant_chains` maps each tenant id in the batch to its ancestor chain (itself first), so a
    tenant override on an organisation applies to its teams, the nearest one winning. Overrides
    are few (negotiated rates), so all that can apply to the batch's tenants are loaded.
    """

    def __init__(self, *, tenant_chains: dict[int, list[int]]):
        self._tenant_chains = tenant_chains
        self._rates: dict[tuple[int, str, str], _Rate] = {}
        chain_ids = {tenant_id for chain in tenant_chains.values() for tenant_id in chain}
        self._overrides: dict[str, list[tuple[PriceOverride, LinearPrice]]] = {}
        overrides = PriceOverride.objects.filter(Q(tenant__isnull=True) | Q(tenant_id__in=chain_ids))
        for override in overrides.order_by("-valid_from"):
            self._overrides.setdefault(override.model, []).append((override, override_linear_price(override)))

    def _override(self, tenant_id: int, provider: str, model: str, at: datetime):
        candidates = self._overrides.get(model)
        if not candidates:
            return None
        chain = self._tenant_chains.get(tenant_id, [tenant_id])
        best = None
        best_rank = None
        for override, price in candidates:
            if override.provider and override.provider != provider:
                continue
            if not (override.valid_from <= at and (override.valid_to is None or at < override.valid_to)):
                continue
            if override.tenant_id is not None and override.tenant_id not in chain:
                continue  # another tenant's negotiated rate (the batch holds several tenants)
            rank = chain.index(override.tenant_id) if override.tenant_id is not None else len(chain)
            # Nearest tenant first; for equal nearness the latest valid_from (candidates are sorted).
            if best_rank is None or rank < best_rank:
                best, best_rank = (override, price), rank
        return best

    def list_unit_prices(
        self, *, tenant_id: int, provider: str, model: str, at: datetime
    ) -> LinearPrice | None:
        """The per-token list prices (base tier) for a tenant's calls of a model at a moment: what a
        statement line shows as its unit price. None when the model has no exact per-token price."""
        override = self._override(tenant_id, provider, model, at) if self._overrides else None
        if override is not None:
            return override[1]
        found = GENAI_PRICES_CACHE.find(provider, model)
        if found is None:
            return None
        price = GENAI_PRICES_CACHE.price(found[0], found[1], at)
        return price.tiers[0] if isinstance(price, TieredPrice) else None

    def quote(
        self,
        *,
        tenant_id: int,
        provider: str,
        model: str,
        at: datetime,
        buckets: TokenBuckets,
        reported_cost_nanos: int | None,
    ) -> Quote:
        """Price one call. `provider` and `model` must already be normalised."""
        key = (tenant_id, provider, model)
        rate = self._rates.get(key)
        if rate is None or not (rate.start <= at < rate.end):
            rate = self._rates[key] = self._rate(tenant_id, provider, model, at)
        if rate.price is not None:
            return Quote(
                rate.price.cost_nanos(buckets), rate.pricing_source, rate.price_version, rate.model_id
            )
        if reported_cost_nanos is not None:
            return Quote(reported_cost_nanos, PricingSource.CLIENT_REPORTED, "client", rate.model_id)
        return Quote(None, PricingSource.UNPRICED, "", rate.model_id)

    def list_price(
        self, *, tenant_id: int, provider: str, model: str, at: datetime
    ) -> TieredPrice | DecimalPrice | None:
        """The list price `quote` applies to a tenant's call of a model at `at`; None: no list price."""
        return self._rate(tenant_id, provider, model, at).price

    def price_periods(
        self, *, provider: str, model: str, start: datetime, end: datetime
    ) -> list[datetime] | None:
        """The starts of the periods within [start, end) during which the model's prices stay the
        same for every tenant of the book (the first is `start`), so that calls can be priced a
        period and a tenant at a time; None when the price changes within a day (off-peak prices):
        then only call by call."""
        periods = []
        at = start
        while at < end:
            # A rate's span takes every tenant's overrides into account: the tenant does not matter.
            rate = self._rate(0, provider, model, at)
            if rate.end <= at:
                return None
            periods.append(at)
            at = rate.end
        return periods

    def _rate(self, tenant_id: int, provider: str, model: str, at: datetime) -> _Rate:
        """How this tenant's calls of this model are priced at `at`, and the span of time around it
        during which that cannot change (no override or genai-prices price starts or ends in it), so
        that a batch resolves each (tenant, provider, model) about once rather than per record."""
        found = GENAI_PRICES_CACHE.find(provider, model)
        model_id = found[1].id if found is not None else model
        start, end = _ALWAYS_START, _ALWAYS_END
        if self._overrides:
            for name in (model, model_id):
                for override, _ in self._overrides.get(name, ()):
                    start, end = _narrow(start, end, at, override.valid_from)
                    start, end = _narrow(start, end, at, override.valid_to)
            override = self._override(tenant_id, provider, model, at) or self._override(
                tenant_id, provider, model_id, at
            )
            if override is not None:
                record, price = override
                return _Rate(
                    start,
                    end,
                    TieredPrice((), (price,)),
                    PricingSource.OVERRIDE,
                    f"override {record.pk}",
                    model_id,
                )
        if found is not None:
            provider_info, model_info = found
            price = GENAI_PRICES_CACHE.price(provider_info, model_info, at)
            if isinstance(model_info.prices, list):
                for conditional in model_info.prices:
                    constraint = conditional.constraint
                    if isinstance(constraint, types.StartDateConstraint):
                        # Active from the UTC midnight starting that date (StartDateConstraint.active).
                        since = datetime.combine(constraint.start_date, dt_time(), UTC)
                        start, end = _narrow(start, end, at, since)
                    elif constraint is not None:
                        start = end = at  # e.g. off-peak hours: resolved for every call
            return _Rate(start, end, price, PricingSource.GENAI_PRICES, GENAI_PRICES_VERSION, model_id)
        return _Rate(start, end, None, PricingSource.UNPRICED, "", model_id)


_ALWAYS_START = datetime.min.replace(tzinfo=UTC)
_ALWAYS_END = datetime.max.replace(tzinfo=UTC)


class _Rate(NamedTuple):
    """How a (tenant, provider, model) is priced from `start` to `end` (exclusive); `price` None:
    no list price (the record is client-reported or unpriced)."""

    start: datetime
    end: datetime
    price: TieredPrice | DecimalPrice | None
    pricing_source: str
    price_version: str
    model_id: str


def _narrow(
    start: datetime, end: datetime, at: datetime, boundary: datetime | None
) -> tuple[datetime, datetime]:
    """[start, end) narrowed to the side of `boundary` that holds `at`."""
    if boundary is None:
        return start, end
    if boundary <= at:
        return max(start, boundary), end
    return start, min(end, boundary)


def model_provider_for(model: str, provider: str = "") -> str:
    """The provider to price a model by name with: the given one (normalised), else the provider
    genai-prices knows the model from; "" when it knows the model from none (an override may still
    price it)."""
    if provider:
        return normalize_provider(provider)
    found = GENAI_PRICES_CACHE.find("", normalize_model(model))
    return found[0].id if found is not None else ""


def model_id_for(provider: str, model: str) -> str:
    """The normalised model id records are rolled up and filtered by: genai-prices' id when it
    knows the model (so dated snapshots group with their family), else the normalised name."""
    provider = normalize_provider(provider)
    model = normalize_model(model, provider)
    found = GENAI_PRICES_CACHE.find(provider, model)
    return found[1].id if found is not None else model
