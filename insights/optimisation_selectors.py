"""Reads for cost optimisation: the costliest request types, caching opportunities, model
substitution what-ifs, routing policy reports and the savings report that ranks them.

Every figure here is list cost: what the providers charge (negotiated price overrides included),
before a tenant's markup or discount, because that is the bill an optimisation changes. Re-pricing
goes through the price book (`chargeback.pricing.PriceBook`), per record, with the token counts as
observed, so a re-priced total is exactly what ingestion would have charged for those calls.

Savings over a period are also shown per month (30 days) at the period's rate, so that
opportunities found over different periods rank on one scale. Opportunities of different kinds can
concern the same calls (caching a prompt and moving it to a cheaper model): they are not additive.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

import numpy as np
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Case, Count, IntegerField, Q, Sum, TextField, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce

from budgets.models import RoutingPolicy
from budgets.routing_selectors import (
    ARM_CONTROL,
    ARM_POLICY,
    ROUTING_ARM_TAG,
    ROUTING_POLICY_TAG,
)
from chargeback import money
from chargeback.costs import (
    SUM_FIELDS,
    CostQuery,
    cost_metrics,
    cost_query_for,
    costs_query,
    latency_quantile_ms,
)
from chargeback.models import LATENCY_BUCKET_FIELDS, PricingSource, UsageRecord, UsageStatus
from chargeback.pricing import PriceBook, TokenBuckets, model_id_for, model_provider_for
from chargeback.usage_storage import latency_bucket
from tenants.models import Tenant
from tenants.selectors import tenant_ancestor_ids, tenant_descendant_ids

DAYS_PER_MONTH = 30
DEFAULT_PERIOD_DAYS = 30
# Provider prompt caching: the share of input tokens read from the cache that the report prices
# as reachable ("what raising it would save").
DEFAULT_TARGET_CACHED_SHARE = Decimal("0.5")
# Opportunities saving less than this a month are not listed (noise).
MIN_MONTHLY_SAVINGS_NANOS = 10 * money.NANOS_PER_CENT
MAX_REPEATED_PROMPTS = 100
MAX_COSTLIEST = 100
# A/B comparison: two-sided 95 % normal interval of the difference between the arms.
Z_95 = 1.959964
UNTAGGED = "(untagged)"
_CHUNK = 5000


class OptimisationError(Exception):
    """A request the reports cannot answer as asked; `code` is stable for API clients."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _tag_text(key: str):
    # Untagged and empty are one value, "", as in the rollups' `feature` column.
    return Coalesce(KeyTextTransform(key, "tags"), Value(""), output_field=TextField())


def _feature_text():
    return _tag_text("feature")


# --- scope -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimisationScope:
    """What a report covers: tenants (None: every tenant), [start, end), optionally one feature
    ("" is untagged usage), and `now`, which bounds the observed part of the period."""

    tenant_ids: list[int] | None
    start: datetime
    end: datetime
    time_zone: str
    now: datetime
    feature: str | None = None

    @property
    def observed(self) -> timedelta:
        """The part of the period that has happened (a period ending tomorrow has not, all of it)."""
        return max(min(self.end, self.now) - self.start, timedelta(0))

    def monthly(self, nanos: int) -> int:
        """An amount over the observed period, at the same rate over 30 days (half-even nanos)."""
        observed = self.observed // timedelta(microseconds=1)
        if observed <= 0:
            return 0
        month = timedelta(days=DAYS_PER_MONTH) // timedelta(microseconds=1)
        return money.divide_half_even(nanos * month, observed)

    def previous(self) -> OptimisationScope:
        """The period of the same length just before this one."""
        length = self.end - self.start
        return replace(self, start=self.start - length, end=self.start, now=self.start)

    def records(self):
        """The scope's raw usage records, with their feature tag as `feature_tag`."""
        records = UsageRecord.objects.filter(occurred_at__gte=self.start, occurred_at__lt=self.end)
        if self.tenant_ids is not None:
            records = records.filter(tenant_id__in=self.tenant_ids)
        records = records.annotate(feature_tag=_feature_text())
        if self.feature is not None:
            records = records.filter(feature_tag=self.feature)
        return records

    def cost_query(self, group_by: tuple[str, ...], **changes) -> CostQuery:
        query = CostQuery(
            start=self.start,
            end=self.end,
            granularity="total",
            time_zone=self.time_zone,
            group_by=group_by,
            tenant_ids=self.tenant_ids,
            tags={} if self.feature is None else {"feature": self.feature},
        )
        return replace(query, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "time_zone": self.time_zone,
            "feature": self.feature,
            "observed_days": round(self.observed / timedelta(days=1), 4),
        }


def optimisation_scope_for(
    *,
    principal,
    now: datetime,
    start: str = "",
    end: str = "",
    tenant: str = "",
    feature: str | None = None,
) -> OptimisationScope:
    """The scope a caller asks for, limited to the tenants the caller may see (the costs API's
    rules: a tenant slug means its subtree; dates are local midnights of the tenant's zone; the
    default period is the 30 local days up to the end of today). Raises CostQueryError."""
    query = cost_query_for(
        principal=principal, now=now, start=start, end=end, granularity="total", tenant=tenant
    )
    return OptimisationScope(
        tenant_ids=query.tenant_ids,
        start=query.start,
        end=query.end,
        time_zone=query.time_zone,
        now=now,
        feature=feature,
    )


def _nothing(scope: OptimisationScope) -> bool:
    return scope.tenant_ids == []


def _slugs(tenant_ids: Iterable[int]) -> dict[int, str]:
    return dict(Tenant.objects.filter(id__in=set(tenant_ids)).values_list("id", "slug"))


def _price_book(tenant_ids: Iterable[int]) -> PriceBook:
    """A price book for these tenants, with their ancestors' negotiated prices."""
    return PriceBook(
        tenant_chains={tenant_id: tenant_ancestor_ids(tenant_id) for tenant_id in set(tenant_ids)}
    )


def _per_request(nanos: int, requests: int) -> int | None:
    return money.divide_half_even(nanos, requests) if requests else None


def _change_percent(current: int, previous: int) -> float | None:
    return round((current - previous) * 100 / previous, 2) if previous else None


# --- costliest request types ---------------------------------------------------------------------------


_COSTLIEST_GROUP = ("tag.feature", "model", "tag.prompt_template")


def costliest_request_types(scope: OptimisationScope, *, limit: int = MAX_COSTLIEST) -> dict[str, Any]:
    """List cost by feature x model x prompt template over the scope, costliest first, with requests,
    tokens, cost per (priced) request, the share of the scope's total, and the trend against the
    period of the same length before (`change_percent`; None when that period had no cost)."""
    if _nothing(scope):
        return {
            "scope": scope.as_dict(),
            "total_list_cost_nanos": 0,
            "previous_total_list_cost_nanos": 0,
            "rows": [],
        }
    current = costs_query(scope.cost_query(_COSTLIEST_GROUP))
    earlier = scope.previous()
    previous = costs_query(earlier.cost_query(_COSTLIEST_GROUP))
    index = {name: position for position, name in enumerate(SUM_FIELDS)}
    previous_cost = {tuple(row.group.values()): row.sums[index["list_cost_nanos"]] for row in previous.rows}
    total = current.totals[index["list_cost_nanos"]]
    rows = []
    for row in current.rows:
        sums = row.sums
        cost = sums[index["list_cost_nanos"]]
        priced = sums[index["requests"]] - sums[index["unpriced_requests"]]
        before = previous_cost.get(tuple(row.group.values()), 0)
        metrics = cost_metrics(sums)
        rows.append(
            {
                "feature": row.group["tag.feature"],
                "model": row.group["model"],
                "prompt_template": row.group["tag.prompt_template"],
                "requests": sums[index["requests"]],
                "unpriced_requests": sums[index["unpriced_requests"]],
                "errors": sums[index["errors"]],
                "input_tokens": metrics["input_tokens"],
                "output_tokens": metrics["output_tokens"],
                "list_cost_nanos": cost,
                "cost_per_request_nanos": _per_request(cost, priced),
                "share_of_total": round(cost / total, 6) if total else None,
                "previous_list_cost_nanos": before,
                "change_percent": _change_percent(cost, before),
            }
        )
    rows.sort(key=lambda row: (-row["list_cost_nanos"], row["feature"], row["model"], row["prompt_template"]))
    return {
        "scope": scope.as_dict(),
        "total_list_cost_nanos": total,
        "previous_total_list_cost_nanos": previous.totals[index["list_cost_nanos"]],
        "rows": rows[:limit],
    }


# --- caching -------------------------------------------------------------------------------------------


@dataclass
class _RepeatedPrompt:
    tenant_id: int
    model: str
    prompt_hash: str
    feature: str = ""
    requests: int = 0
    hits: int = 0
    list_cost_nanos: int = 0
    saved_nanos: int = 0


def exact_cache_savings(
    occurrences: Iterable[tuple[datetime, str, int | None]], ttl: timedelta | None = None
) -> tuple[int, int]:
    """(hits, saved nanos) of an exact-match cache over one prompt's calls in time order, each
    (time, status, list cost). The first successful call fills the cache; every later call while
    the entry lives (`ttl` from the fill; None: forever) is a hit and saves its cost. A failed call
    fills nothing; a call after the entry expired is paid and fills it again."""
    filled_at = None
    hits = saved = 0
    for occurred_at, status, cost in occurrences:
        if filled_at is not None and (ttl is None or occurred_at - filled_at < ttl):
            hits += 1
            saved += cost or 0
        elif status == UsageStatus.OK:
            filled_at = occurred_at
    return hits, saved


def _repeated_prompts(scope: OptimisationScope, ttl: timedelta | None) -> tuple[dict, list[_RepeatedPrompt]]:
    hashed = scope.records().filter(prompt_hash__isnull=False)
    totals = hashed.aggregate(requests=Count("id"), cost=Sum("list_cost_nanos"))
    groups = (
        hashed.order_by()
        .values("tenant_id", "model_id", "prompt_hash")
        .annotate(requests=Count("id"))
        .filter(requests__gt=1)
    )
    keys = {(group["tenant_id"], group["model_id"], group["prompt_hash"]) for group in groups}
    prompts: dict[tuple, _RepeatedPrompt] = {}
    hashes = sorted({key[2] for key in keys})
    for offset in range(0, len(hashes), _CHUNK):
        rows = (
            hashed.filter(prompt_hash__in=hashes[offset : offset + _CHUNK])
            .order_by("tenant_id", "model_id", "prompt_hash", "occurred_at", "id")
            .values_list(
                "tenant_id",
                "model_id",
                "prompt_hash",
                "occurred_at",
                "status",
                "list_cost_nanos",
                "feature_tag",
            )
        )
        current_key, occurrences = None, []
        for tenant_id, model, prompt_hash, occurred_at, status, cost, feature in rows.iterator(
            chunk_size=_CHUNK
        ):
            key = (tenant_id, model, prompt_hash)
            if key not in keys:
                continue  # the same hash, once only, in another tenant or model
            if key != current_key:
                _close_prompt(prompts, current_key, occurrences, ttl)
                current_key, occurrences = key, []
                prompts[key] = _RepeatedPrompt(tenant_id, model, prompt_hash, feature)
            prompt = prompts[key]
            prompt.requests += 1
            prompt.list_cost_nanos += cost or 0
            occurrences.append((occurred_at, status, cost))
        _close_prompt(prompts, current_key, occurrences, ttl)
    summary = {
        "requests_with_prompt_hash": totals["requests"] or 0,
        "list_cost_with_prompt_hash_nanos": totals["cost"] or 0,
    }
    return summary, list(prompts.values())


def _close_prompt(prompts: dict, key, occurrences: list, ttl: timedelta | None) -> None:
    if key is not None:
        prompts[key].hits, prompts[key].saved_nanos = exact_cache_savings(occurrences, ttl)


def _prompt_caching_groups(scope: OptimisationScope) -> Iterator[dict]:
    """Input token sums per tenant, provider, model and feature over the scope, from the costs query
    (the rollups for whole hours, the raw records for hours an edge cuts: exact, and quick)."""
    result = costs_query(scope.cost_query(("tenant", "provider", "model", "tag.feature")))
    ids = dict(
        Tenant.objects.filter(slug__in={row.group["tenant"] for row in result.rows}).values_list("slug", "id")
    )
    index = {name: position for position, name in enumerate(SUM_FIELDS)}
    for row in result.rows:
        yield {
            "tenant_id": ids[row.group["tenant"]],
            "provider": row.group["provider"],
            "model_id": row.group["model"],
            "feature_tag": row.group["tag.feature"],
            "requests": row.sums[index["requests"]],
            "uncached": row.sums[index["uncached_input_tokens"]],
            "cached": row.sums[index["cached_input_tokens"]],
            "cache_write": row.sums[index["cache_write_tokens"]],
        }


def prompt_caching_report(
    scope: OptimisationScope, *, target_cached_share: Decimal = DEFAULT_TARGET_CACHED_SHARE
) -> list[dict[str, Any]]:
    """For models whose provider prices cache reads below input (prompt caching), per provider,
    model and feature: the share of input read from the cache, what that saved against uncached
    input, and what raising the share to `target_cached_share` would save: the extra cached tokens
    times (input price - cache read price), with each tenant's own prices at the middle of the
    period. Cache writes are not counted (a provider may charge more for them)."""
    if _nothing(scope):
        return []
    groups = list(_prompt_caching_groups(scope))
    book = _price_book(group["tenant_id"] for group in groups)
    middle = scope.start + (min(scope.end, max(scope.now, scope.start)) - scope.start) / 2
    prices: dict[tuple, Any] = {}
    rows: dict[tuple, dict[str, Any]] = {}
    for group in groups:
        price_key = (group["tenant_id"], group["provider"], group["model_id"])
        if price_key not in prices:
            prices[price_key] = book.list_unit_prices(
                tenant_id=group["tenant_id"], provider=group["provider"], model=group["model_id"], at=middle
            )
        price = prices[price_key]
        if price is None or price.cached_input >= price.uncached_input:
            continue  # no prompt caching discount to gain
        uncached, cached, write = group["uncached"] or 0, group["cached"] or 0, group["cache_write"] or 0
        input_total = uncached + cached + write
        reachable = int((target_cached_share * input_total).to_integral_value(rounding=ROUND_CEILING))
        extra = min(max(reachable - cached, 0), uncached)
        discount = price.uncached_input - price.cached_input  # atto-USD per token
        key = (group["provider"], group["model_id"], group["feature_tag"])
        row = rows.setdefault(
            key,
            {
                "provider": key[0],
                "model": key[1],
                "feature": key[2],
                "requests": 0,
                "input_tokens": 0,
                "cached_input_tokens": 0,
                "cache_write_tokens": 0,
                "saved_attos": 0,
                "potential_attos": 0,
                "extra_cached_tokens": 0,
                "input_price_per_mtok_attos": price.uncached_input * 10**6,
                "cache_read_price_per_mtok_attos": price.cached_input * 10**6,
            },
        )
        row["requests"] += group["requests"]
        row["input_tokens"] += input_total
        row["cached_input_tokens"] += cached
        row["cache_write_tokens"] += write
        row["saved_attos"] += cached * discount
        row["potential_attos"] += extra * discount
        row["extra_cached_tokens"] += extra
    result = []
    for row in rows.values():
        saved, potential = row.pop("saved_attos"), row.pop("potential_attos")
        row["saved_by_caching_nanos"] = money.attos_to_nanos(saved)
        row["potential_savings_nanos"] = money.attos_to_nanos(potential)
        row["monthly_potential_savings_nanos"] = scope.monthly(row["potential_savings_nanos"])
        row["cached_share"] = (
            round(row["cached_input_tokens"] / row["input_tokens"], 6) if row["input_tokens"] else None
        )
        row["target_cached_share"] = float(target_cached_share)
        row["input_price_per_mtok_nanos"] = money.attos_to_nanos(row.pop("input_price_per_mtok_attos"))
        row["cache_read_price_per_mtok_nanos"] = money.attos_to_nanos(
            row.pop("cache_read_price_per_mtok_attos")
        )
        result.append(row)
    result.sort(
        key=lambda row: (-row["potential_savings_nanos"], row["provider"], row["model"], row["feature"])
    )
    return result


def caching_report(
    scope: OptimisationScope,
    *,
    ttl: timedelta | None = None,
    target_cached_share: Decimal = DEFAULT_TARGET_CACHED_SHARE,
    limit: int = MAX_REPEATED_PROMPTS,
) -> dict[str, Any]:
    """Both caching opportunities over the scope: repeated prompts (records with the same
    `prompt_hash`, tenant and model) and what an exact-match cache would have saved, by prompt and
    by feature; and provider prompt caching (`prompt_caching_report`)."""
    if _nothing(scope):
        summary, prompts = {"requests_with_prompt_hash": 0, "list_cost_with_prompt_hash_nanos": 0}, []
    else:
        summary, prompts = _repeated_prompts(scope, ttl)
    slugs = _slugs(prompt.tenant_id for prompt in prompts)
    saved = sum(prompt.saved_nanos for prompt in prompts)
    by_feature: dict[tuple[str, str], dict[str, Any]] = {}
    for prompt in prompts:
        entry = by_feature.setdefault(
            (prompt.feature, prompt.model),
            {"feature": prompt.feature, "model": prompt.model, "prompts": 0, "requests": 0, "hits": 0,
             "list_cost_nanos": 0, "saved_nanos": 0},
        )  # fmt: skip
        entry["prompts"] += 1
        entry["requests"] += prompt.requests
        entry["hits"] += prompt.hits
        entry["list_cost_nanos"] += prompt.list_cost_nanos
        entry["saved_nanos"] += prompt.saved_nanos
    for entry in by_feature.values():
        entry["monthly_saved_nanos"] = scope.monthly(entry["saved_nanos"])
    prompts.sort(
        key=lambda prompt: (-prompt.saved_nanos, slugs[prompt.tenant_id], prompt.model, prompt.prompt_hash)
    )
    return {
        "scope": scope.as_dict(),
        "exact_cache": {
            "ttl_seconds": None if ttl is None else int(ttl.total_seconds()),
            **summary,
            "repeated_prompts": len(prompts),
            "repeated_requests": sum(prompt.hits for prompt in prompts),
            "saved_nanos": saved,
            "monthly_saved_nanos": scope.monthly(saved),
            "by_feature": sorted(
                by_feature.values(),
                key=lambda entry: (-entry["saved_nanos"], entry["feature"], entry["model"]),
            ),
            "prompts": [
                {
                    "tenant": slugs[prompt.tenant_id],
                    "model": prompt.model,
                    "prompt_hash": prompt.prompt_hash,
                    "feature": prompt.feature,
                    "requests": prompt.requests,
                    "hits": prompt.hits,
                    "list_cost_nanos": prompt.list_cost_nanos,
                    "saved_nanos": prompt.saved_nanos,
                }
                for prompt in prompts[:limit]
            ],
        },
        "prompt_caching": prompt_caching_report(scope, target_cached_share=target_cached_share),
    }


# --- model substitution ---------------------------------------------------------------------------------


_TOKEN_FIELDS = (
    "uncached_input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_write_1h_tokens",
)  # TokenBuckets' order


@dataclass
class _Calls:
    """Priced calls as columns, to re-price them a tenant and a price period at a time (a million
    calls one by one take tens of seconds). `period` indexes `period_starts`; `occurred_at` is only
    read when some model's price changes within a day."""

    tenant_ids: np.ndarray
    model_ids: np.ndarray  # codes into `models`
    features: np.ndarray  # codes into `feature_names`
    period: np.ndarray
    tokens: np.ndarray  # one row per call, TokenBuckets' columns
    list_costs: np.ndarray
    models: list[str]
    feature_names: list[str]
    period_starts: list[datetime]
    occurred_at: list[datetime] | None

    def __len__(self) -> int:
        return len(self.list_costs)


_CALLS_CHUNK = 50_000  # rows converted to columns at a time


class _Codes:
    """Integer codes for names (models, features), the same code for the same name in every chunk."""

    def __init__(self):
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def _code(self, name: str) -> int:
        code = self._index.get(name)
        if code is None:
            code = self._index[name] = len(self.names)
            self.names.append(name)
        return code

    def of(self, names: Iterable[str]) -> np.ndarray:
        return np.fromiter(map(self._code, names), dtype=np.int64)


def _calls_fetch(records, *, period_starts: list[datetime], with_times: bool) -> _Calls:
    """The priced calls of `records`, each with the index of the period (of `period_starts`, the
    first being the scope's start) it falls in, worked out by the database."""
    period = Value(0)
    if len(period_starts) > 1:
        period = Case(
            *(
                When(occurred_at__gte=moment, then=Value(index))
                for index, moment in reversed(list(enumerate(period_starts)))
                if index
            ),
            default=Value(0),
            output_field=IntegerField(),
        )
    fields = ["tenant_id", "model_id", "feature_tag", "price_period", *_TOKEN_FIELDS, "list_cost_nanos"]
    queryset = records.filter(list_cost_nanos__isnull=False).annotate(price_period=period).order_by()
    models, feature_names = _Codes(), _Codes()
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    occurred_at: list[datetime] | None = [] if with_times else None
    for chunk in _row_chunks(queryset, [*fields, "occurred_at"] if with_times else fields):
        columns = list(zip(*chunk, strict=True))
        parts["tenant_ids"].append(np.array(columns[0], dtype=np.int64))
        parts["model_ids"].append(models.of(columns[1]))
        parts["features"].append(feature_names.of(columns[2]))
        parts["period"].append(np.array(columns[3], dtype=np.int64))
        parts["tokens"].append(np.array(columns[4:10], dtype=np.int64).T)
        parts["list_costs"].append(np.array(columns[10], dtype=np.int64))
        if occurred_at is not None:
            occurred_at.extend(columns[11])

    def joined(name: str, empty_shape: tuple[int, ...] = (0,)) -> np.ndarray:
        return np.concatenate(parts[name]) if parts[name] else np.zeros(empty_shape, dtype=np.int64)

    return _Calls(
        tenant_ids=joined("tenant_ids"),
        model_ids=joined("model_ids"),
        features=joined("features"),
        period=joined("period"),
        tokens=joined("tokens", (0, len(_TOKEN_FIELDS))),
        list_costs=joined("list_costs"),
        models=models.names,
        feature_names=feature_names.names,
        period_starts=period_starts,
        occurred_at=occurred_at,
    )


def _row_chunks(queryset, fields: list[str]) -> Iterator[list[tuple]]:
    """The `fields` of the queryset's rows, a chunk at a time. Without timestamps every column is an
    integer or text, so the query runs on a plain (server-side, on PostgreSQL) cursor: Django's
    per-row converters cost more than the rest of a million-call re-pricing."""
    if "occurred_at" in fields:
        rows = queryset.values_list(*fields).iterator(chunk_size=_CHUNK)
        while chunk := list(itertools.islice(rows, _CALLS_CHUNK)):
            yield chunk
        return
    try:
        sql, params = queryset.values_list(*fields).query.sql_with_params()
    except EmptyResultSet:  # e.g. a caller who may see no tenant: Django runs no such query
        return
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while chunk := cursor.fetchmany(_CALLS_CHUNK):
            yield chunk


def _price_period_starts(
    book: PriceBook, scope: OptimisationScope, targets: Iterable[tuple[str, str]]
) -> list[datetime] | None:
    """Where the prices of any of these (provider, model) targets may change within the scope:
    the starts of the periods the calls are grouped by (None: some price changes within a day)."""
    starts = {scope.start}
    for provider, model in targets:
        periods = book.price_periods(provider=provider, model=model, start=scope.start, end=scope.end)
        if periods is None:
            return None
        starts.update(periods)
    return sorted(starts)


def _repriced(
    book: PriceBook, calls: _Calls, rows: np.ndarray, provider: str, model: str
) -> tuple[np.ndarray, bool]:
    """The list cost of each call of `rows` (a boolean mask) on another model, by the price book:
    each call with its own tenant's prices at its own time, exactly as `PriceBook.quote` prices it;
    and whether every call had a price (the others cost 0 here)."""
    selected = np.flatnonzero(rows)
    costs = np.zeros(len(selected), dtype=object if calls.occurred_at is not None else np.int64)
    priced = True
    if calls.occurred_at is not None:  # prices by time of day: one call at a time
        for position, row in enumerate(selected.tolist()):
            quote = book.quote(
                tenant_id=int(calls.tenant_ids[row]), provider=provider, model=model,
                at=calls.occurred_at[row], buckets=TokenBuckets(*calls.tokens[row].tolist()),
                reported_cost_nanos=None,
            )  # fmt: skip
            if quote.list_cost_nanos is None:
                priced = False
            else:
                costs[position] = quote.list_cost_nanos
        return costs, priced
    periods = len(calls.period_starts)
    groups = calls.tenant_ids[selected] * periods + calls.period[selected]
    order = np.argsort(groups, kind="stable")  # each (tenant, period) group a slice of `order`
    keys, firsts = np.unique(groups[order], return_index=True)
    ends = [*firsts[1:].tolist(), len(order)] if len(keys) else []
    for group, first, end in zip(keys.tolist(), firsts.tolist(), ends, strict=True):
        tenant_id, period = divmod(group, periods)
        price = book.list_price(
            tenant_id=tenant_id, provider=provider, model=model, at=calls.period_starts[period]
        )
        if price is None:
            priced = False
            continue
        members = order[first:end]
        found = price.cost_nanos_many(calls.tokens[selected[members]])
        if found.dtype == object and costs.dtype != object:  # amounts beyond int64 (see cost_nanos_many)
            costs = costs.astype(object)
        costs[members] = found
    return costs, priced


def _total(values: np.ndarray) -> int:
    """The exact sum of nanos (Python integers: a large scope's total may not fit int64)."""
    return int(values.sum(dtype=object)) if len(values) else 0


def _calls_and_book(
    scope: OptimisationScope, records, targets: list[tuple[str, str]]
) -> tuple[_Calls, PriceBook]:
    """The priced calls of `records` as columns, and a price book for their tenants, ready to be
    re-priced on the (provider, model) targets."""
    book = _price_book(records.order_by().values_list("tenant_id", flat=True).distinct())
    starts = _price_period_starts(book, scope, targets)
    calls = _calls_fetch(records, period_starts=starts or [scope.start], with_times=starts is None)
    return calls, book


def _priced_for_anyone(book: PriceBook, provider: str, model: str, at: datetime) -> bool:
    """Whether the model has a list price without a tenant's own override (genai-prices or a
    global override)."""
    quote = book.quote(
        tenant_id=0,
        provider=provider,
        model=model,
        at=at,
        buckets=TokenBuckets(1, 0, 0, 1),
        reported_cost_nanos=None,
    )
    return quote.pricing_source != PricingSource.UNPRICED


def _model_statistics(scope: OptimisationScope) -> dict[str, dict[str, Any]]:
    """Requests, error rate and latency per model over the scope (the costs query's figures)."""
    if _nothing(scope):
        return {}
    result = costs_query(scope.cost_query(("model",)))
    return {
        row.group["model"]: {
            key: value
            for key, value in cost_metrics(row.sums).items()
            if key
            in ("requests", "errors", "error_rate", "latency_average_ms", "latency_p50_ms", "latency_p95_ms")
        }
        for row in result.rows
    }


def model_target_resolve(model: str, provider: str = "") -> tuple[str, str]:
    """(provider, model id) of a model named by a caller, as the price book and records spell them."""
    model = model.strip()
    if not model:
        raise OptimisationError("missing_model", "Name the model to re-price on (?model=...).")
    provider = model_provider_for(model, provider)
    return provider, model_id_for(provider, model)


def model_what_if(
    scope: OptimisationScope, *, model: str, provider: str = "", source_model: str = ""
) -> dict[str, Any]:
    """The scope's usage re-priced on another model with the price book (each record with its own
    tenant's prices at its own time, token counts as observed), against what it cost: per source
    model and in total, with the savings (negative: the other model costs more), and the requests,
    error rate and latency of every model used in the scope, the target's included where it was
    used. Records without a list cost (unpriced) are counted and left out of both sides."""
    target_provider, target_model = model_target_resolve(model, provider)
    records = scope.records()
    if source_model:
        records = records.filter(model_id=model_id_for("", source_model))
    if _nothing(scope):
        records = records.none()
    unpriced_current = records.filter(list_cost_nanos__isnull=True).count()
    calls, book = _calls_and_book(scope, records, [(target_provider, target_model)])
    unknown = OptimisationError(
        "unpriced_model", f"No price is known for {model!r}: add a price override to re-price on it."
    )
    if not len(calls) and not _priced_for_anyone(book, target_provider, target_model, scope.start):
        raise unknown  # nothing to re-price, but a model no price list knows is an error, not zero savings
    repriced_costs, priced = _repriced(
        book, calls, np.ones(len(calls), dtype=bool), target_provider, target_model
    )
    if not priced:
        raise unknown
    by_model: dict[str, dict[str, Any]] = {}
    for code, name in enumerate(calls.models):
        rows = calls.model_ids == code
        by_model[name] = {
            "model": name,
            "requests": int(rows.sum()),
            "list_cost_nanos": _total(calls.list_costs[rows]),
            "repriced_cost_nanos": _total(repriced_costs[rows]),
        }
    current = sum(entry["list_cost_nanos"] for entry in by_model.values())
    repriced = sum(entry["repriced_cost_nanos"] for entry in by_model.values())
    for entry in by_model.values():
        entry["savings_nanos"] = entry["list_cost_nanos"] - entry["repriced_cost_nanos"]
        entry["monthly_savings_nanos"] = scope.monthly(entry["savings_nanos"])
    statistics = _model_statistics(scope)
    return {
        "scope": scope.as_dict(),
        "target": {
            "provider": target_provider,
            "model": target_model,
            "used_in_scope": target_model in statistics,
        },
        "requests": sum(entry["requests"] for entry in by_model.values()),
        "unpriced_requests_skipped": unpriced_current,
        "list_cost_nanos": current,
        "repriced_cost_nanos": repriced,
        "savings_nanos": current - repriced,
        "monthly_savings_nanos": scope.monthly(current - repriced),
        "by_model": sorted(by_model.values(), key=lambda entry: (-entry["savings_nanos"], entry["model"])),
        "model_statistics": [{"model": name, **figures} for name, figures in sorted(statistics.items())],
    }


def _may_be_cheaper(alternative, model) -> bool:
    """Whether a model's calls could cost less on `alternative`, from their base-tier list prices:
    some token type (input, cache read or output) must be cheaper. Unknown prices: maybe."""
    if alternative is None or model is None:
        return True
    return (
        alternative.uncached_input < model.uncached_input
        or alternative.cached_input < model.cached_input
        or alternative.output < model.output
    )


def substitution_opportunities(scope: OptimisationScope) -> list[dict[str, Any]]:
    """Per feature, each model whose calls would cost less on another model already used for the
    same feature in the scope (so its latency and error rate there are known): the cheapest such
    alternative, with the calls re-priced on it by the price book (exactly, call by call).
    Alternatives whose list prices are no lower for any token type are not tried."""
    if _nothing(scope):
        return []
    models_by_feature: dict[str, set[str]] = defaultdict(set)
    provider_of: dict[str, str] = {}
    for feature, model, provider in (
        scope.records()
        .filter(list_cost_nanos__isnull=False)
        .order_by()
        .values_list("feature_tag", "model_id", "provider")
        .distinct()
    ):
        models_by_feature[feature].add(model)
        provider_of.setdefault(model, provider)
    # Only models with a list price (genai-prices or a global override) are candidates.
    probe = _price_book([])
    middle = scope.start + (min(scope.end, max(scope.now, scope.start)) - scope.start) / 2
    priced = {
        model for model in provider_of if _priced_for_anyone(probe, provider_of[model], model, scope.start)
    }
    unit_prices = {
        model: probe.list_unit_prices(tenant_id=0, provider=provider_of[model], model=model, at=middle)
        for model in priced
    }
    candidates: dict[tuple[str, str], list[str]] = {}
    for feature, models in models_by_feature.items():
        for model in models & priced:
            alternatives = [
                other
                for other in sorted(models & priced)
                if other != model and _may_be_cheaper(unit_prices[other], unit_prices[model])
            ]
            if alternatives:
                candidates[feature, model] = alternatives
    if not candidates:
        return []
    # Only the calls of models that have a candidate are read (and re-priced).
    wanted = Q(pk__in=[])
    for feature in {feature for feature, _ in candidates}:
        models = [model for (other, model) in candidates if other == feature]
        wanted |= Q(feature_tag=feature, model_id__in=models)
    alternatives_used = sorted({alternative for found in candidates.values() for alternative in found})
    calls, book = _calls_and_book(
        scope, scope.records().filter(wanted), [(provider_of[name], name) for name in alternatives_used]
    )
    pair_rows = {
        (feature, model): (calls.features == calls.feature_names.index(feature))
        & (calls.model_ids == calls.models.index(model))
        for feature, model in candidates
        if feature in calls.feature_names and model in calls.models
    }
    sums: dict[tuple[str, str, str], tuple[int, int, int]] = {}  # requests, current, repriced
    for alternative in alternatives_used:
        pairs = [pair for pair in pair_rows if alternative in candidates[pair]]
        if not pairs:  # its calls were re-rated since the candidates were listed
            continue
        rows = np.logical_or.reduce([pair_rows[pair] for pair in pairs])
        found, _ = _repriced(book, calls, rows, provider_of[alternative], alternative)
        costs = np.zeros(len(calls), dtype=found.dtype)
        costs[rows] = found
        for pair in pairs:
            members = pair_rows[pair]
            sums[(*pair, alternative)] = (
                int(members.sum()),
                _total(calls.list_costs[members]),
                _total(costs[members]),
            )
    statistics: dict[str, dict[str, dict]] = {}
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for (feature, model, alternative), (requests, current, repriced) in sums.items():
        savings = current - repriced
        if savings <= 0:
            continue
        key = (feature, model)
        if key in best and best[key]["savings_nanos"] >= savings:
            continue
        if feature not in statistics:
            statistics[feature] = _model_statistics(replace(scope, feature=feature))
        best[key] = {
            "feature": feature,
            "model": model,
            "alternative": alternative,
            "alternative_provider": provider_of[alternative],
            "requests": requests,
            "list_cost_nanos": current,
            "repriced_cost_nanos": repriced,
            "savings_nanos": savings,
            "monthly_savings_nanos": scope.monthly(savings),
            "model_statistics": statistics[feature].get(model),
            "alternative_statistics": statistics[feature].get(alternative),
        }
    return sorted(
        best.values(), key=lambda entry: (-entry["savings_nanos"], entry["feature"], entry["model"])
    )


# --- routing policies -----------------------------------------------------------------------------------


@dataclass
class _Arm:
    requests: int = 0
    errors: int = 0
    priced: int = 0
    cost: int = 0
    cost_squares: int = 0
    latency_count: int = 0
    latency_sum: int = 0
    models: dict[str, int] | None = None
    buckets: list[int] | None = None

    def add(self, model: str, status: str, latency_ms: int | None, cost: int | None) -> None:
        if self.models is None:
            self.models, self.buckets = {}, [0] * len(LATENCY_BUCKET_FIELDS)
        self.requests += 1
        self.models[model] = self.models.get(model, 0) + 1
        if status == UsageStatus.ERROR:
            self.errors += 1
        if cost is not None:
            self.priced += 1
            self.cost += cost
            self.cost_squares += cost * cost
        if latency_ms is not None:
            self.latency_count += 1
            self.latency_sum += latency_ms
            self.buckets[latency_bucket(latency_ms)] += 1

    def mean_cost(self) -> float | None:
        return self.cost / self.priced if self.priced else None

    def cost_variance(self) -> float | None:
        if self.priced < 2:
            return None
        # Exact integer sums; the variance itself is an estimate.
        return (self.cost_squares - self.cost * self.cost / self.priced) / (self.priced - 1)

    def as_dict(self) -> dict[str, Any]:
        buckets = self.buckets or []
        p50, p95 = latency_quantile_ms(buckets, 0.5), latency_quantile_ms(buckets, 0.95)
        return {
            "requests": self.requests,
            "priced_requests": self.priced,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 6) if self.requests else None,
            "list_cost_nanos": self.cost,
            "cost_per_request_nanos": _per_request(self.cost, self.priced),
            "latency_average_ms": round(self.latency_sum / self.latency_count, 1)
            if self.latency_count
            else None,
            "latency_p50_ms": None if p50 is None else round(p50, 1),
            "latency_p95_ms": None if p95 is None else round(p95, 1),
            "models": dict(sorted((self.models or {}).items(), key=lambda item: (-item[1], item[0]))),
        }


def _difference(policy: _Arm, control: _Arm) -> dict[str, Any]:
    """Policy minus control: cost per request and error rate, each with an approximate 95 %
    interval (Welch's normal approximation; two proportions), and whether it excludes zero."""
    result: dict[str, Any] = {
        "cost_per_request_nanos": None,
        "cost_per_request_interval_nanos": None,
        "cost_difference_is_significant": False,
        "error_rate": None,
        "error_rate_interval": None,
        "error_rate_difference_is_significant": False,
    }
    if policy.priced and control.priced:
        difference = policy.mean_cost() - control.mean_cost()
        result["cost_per_request_nanos"] = round(difference)
        variances = (policy.cost_variance(), control.cost_variance())
        if None not in variances:
            margin = Z_95 * math.sqrt(variances[0] / policy.priced + variances[1] / control.priced)
            result["cost_per_request_interval_nanos"] = [
                round(difference - margin),
                round(difference + margin),
            ]
            result["cost_difference_is_significant"] = abs(difference) > margin
    if policy.requests and control.requests:
        rates = (policy.errors / policy.requests, control.errors / control.requests)
        difference = rates[0] - rates[1]
        margin = Z_95 * math.sqrt(
            rates[0] * (1 - rates[0]) / policy.requests + rates[1] * (1 - rates[1]) / control.requests
        )
        result["error_rate"] = round(difference, 6)
        result["error_rate_interval"] = [round(difference - margin, 6), round(difference + margin, 6)]
        result["error_rate_difference_is_significant"] = abs(difference) > margin
    return result


def _policy_traffic(policy: RoutingPolicy, tenant_ids: list[int]):
    """The records a policy is about: its tenants, narrowed to its rules' tag conditions when every
    rule has one (model, budget and input conditions are left out: after the policy the calls run on
    the new model, and budget use and estimates are not on the records)."""
    records = UsageRecord.objects.filter(tenant_id__in=tenant_ids)
    rules = list(policy.rules.all())
    if rules and all(rule.tag_key for rule in rules):
        condition = Q()
        for rule in rules:
            condition |= Q(**{f"tags__{rule.tag_key}": rule.tag_value})
        records = records.filter(condition)
    return records


def _window_figures(records, start: datetime, end: datetime) -> dict[str, Any]:
    sums = records.filter(occurred_at__gte=start, occurred_at__lt=end).aggregate(
        requests=Count("id"),
        priced=Count("id", filter=Q(list_cost_nanos__isnull=False)),
        cost=Sum("list_cost_nanos"),
    )
    cost = sums["cost"] or 0
    return {
        "start": start,
        "end": end,
        "requests": sums["requests"],
        "list_cost_nanos": cost,
        "cost_per_request_nanos": _per_request(cost, sums["priced"]),
    }


def routing_policy_report(
    policy: RoutingPolicy,
    *,
    visible_tenant_ids: list[int] | None,
    now: datetime,
    window: timedelta = timedelta(days=DEFAULT_PERIOD_DAYS),
) -> dict[str, Any]:
    """A policy's evidence: cost per request of its traffic in equal windows before and after it
    took effect (`active_from`), and the A/B arms as clients tagged them (`routing_policy`,
    `routing_arm`) since then: requests, cost per request, error rate and latency of each, and the
    differences with approximate 95 % intervals. Only the policy's tenants among
    `visible_tenant_ids` (None: every tenant) count."""
    subtree = tenant_descendant_ids(policy.tenant_id)
    tenant_ids = subtree if visible_tenant_ids is None else sorted(set(subtree) & set(visible_tenant_ids))
    after_length = min(max(now - policy.active_from, timedelta(0)), window)
    traffic = _policy_traffic(policy, tenant_ids)
    before = _window_figures(traffic, policy.active_from - after_length, policy.active_from)
    after = _window_figures(traffic, policy.active_from, policy.active_from + after_length)
    change = None
    if before["cost_per_request_nanos"] and after["cost_per_request_nanos"] is not None:
        change = _change_percent(after["cost_per_request_nanos"], before["cost_per_request_nanos"])
    arms = {ARM_POLICY: _Arm(), ARM_CONTROL: _Arm()}
    tagged = (
        UsageRecord.objects.filter(
            tenant_id__in=tenant_ids, occurred_at__gte=policy.active_from, occurred_at__lt=now
        )
        .filter(**{f"tags__{ROUTING_POLICY_TAG}": str(policy.pk)})
        .annotate(arm=_tag_text(ROUTING_ARM_TAG))
        .filter(arm__in=list(arms))
        .order_by()
        .values_list("arm", "model_id", "status", "latency_ms", "list_cost_nanos")
    )
    for arm, model, status, latency_ms, cost in tagged.iterator(chunk_size=_CHUNK):
        arms[arm].add(model, status, latency_ms, cost)
    policy_arm, control_arm = arms[ARM_POLICY], arms[ARM_CONTROL]
    difference = _difference(policy_arm, control_arm)
    # Adopting the policy for all matching traffic: the control arm's calls at the policy arm's
    # cost per request, at the observed rate, per month.
    adoption = None
    if policy_arm.priced and control_arm.priced:
        since = OptimisationScope(tenant_ids, policy.active_from, now, "UTC", now)
        saved = control_arm.cost - money.divide_half_even(
            policy_arm.cost * control_arm.priced, policy_arm.priced
        )
        adoption = {"period_savings_nanos": saved, "monthly_savings_nanos": since.monthly(saved)}
    return {
        "policy": {
            "id": policy.pk,
            "name": policy.name,
            "tenant": policy.tenant.slug,
            "share": policy.share,
            "split_tag": policy.split_tag,
            "active_from": policy.active_from,
            "is_active": policy.is_active,
            "rules": [
                {"id": rule.pk, "position": rule.position, "description": rule.description}
                for rule in policy.rules.all()
            ],
        },
        "before_after": {
            "before": before,
            "after": after,
            "change_percent": change,
        },
        "ab_test": {
            "policy": policy_arm.as_dict(),
            "control": control_arm.as_dict(),
            "difference": difference,
            "full_adoption": adoption,
        },
    }


# --- the savings report ---------------------------------------------------------------------------------


def _title_feature(feature: str) -> str:
    return feature or UNTAGGED


def savings_report(
    scope: OptimisationScope,
    *,
    target_cached_share: Decimal = DEFAULT_TARGET_CACHED_SHARE,
    caching: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every opportunity found over the scope, ranked by monthly savings: repeated prompts an
    exact-match cache would answer, more provider prompt caching, cheaper models already used for
    the same feature, and A/B routing policies whose policy arm costs less per request (adopting
    them fully). Each comes with the evidence behind its figure. `caching` is the scope's
    `caching_report` when the caller has it already."""
    opportunities: list[dict[str, Any]] = []
    if caching is None:
        caching = caching_report(scope, target_cached_share=target_cached_share)
    for entry in caching["exact_cache"]["by_feature"]:
        opportunities.append(
            {
                "kind": "exact_cache",
                "title": f"Cache repeated prompts of {_title_feature(entry['feature'])} on {entry['model']}",
                "feature": entry["feature"],
                "model": entry["model"],
                "alternative": "",
                "period_savings_nanos": entry["saved_nanos"],
                "monthly_savings_nanos": entry["monthly_saved_nanos"],
                "evidence": {
                    "repeated_prompts": entry["prompts"],
                    "requests": entry["requests"],
                    "cache_hits": entry["hits"],
                    "list_cost_usd": money.nanos_to_str(entry["list_cost_nanos"]),
                },
            }
        )
    for entry in caching["prompt_caching"]:
        opportunities.append(
            {
                "kind": "prompt_caching",
                "title": f"Raise prompt caching of {_title_feature(entry['feature'])} on {entry['model']} "
                f"from {entry['cached_share']:.0%} to {entry['target_cached_share']:.0%} of input",
                "feature": entry["feature"],
                "model": entry["model"],
                "alternative": "",
                "period_savings_nanos": entry["potential_savings_nanos"],
                "monthly_savings_nanos": entry["monthly_potential_savings_nanos"],
                "evidence": {
                    "input_tokens": entry["input_tokens"],
                    "cached_input_tokens": entry["cached_input_tokens"],
                    "extra_cached_tokens": entry["extra_cached_tokens"],
                    "input_price_per_mtok_usd": money.nanos_to_str(entry["input_price_per_mtok_nanos"]),
                    "cache_read_price_per_mtok_usd": money.nanos_to_str(
                        entry["cache_read_price_per_mtok_nanos"]
                    ),
                },
            }
        )
    for entry in substitution_opportunities(scope):
        opportunities.append(
            {
                "kind": "model_substitution",
                "title": f"Move {_title_feature(entry['feature'])} from {entry['model']} to {entry['alternative']}",
                "feature": entry["feature"],
                "model": entry["model"],
                "alternative": entry["alternative"],
                "period_savings_nanos": entry["savings_nanos"],
                "monthly_savings_nanos": entry["monthly_savings_nanos"],
                "evidence": {
                    "requests": entry["requests"],
                    "list_cost_usd": money.nanos_to_str(entry["list_cost_nanos"]),
                    "repriced_cost_usd": money.nanos_to_str(entry["repriced_cost_nanos"]),
                    "model_statistics": entry["model_statistics"],
                    "alternative_statistics": entry["alternative_statistics"],
                },
            }
        )
    policies = RoutingPolicy.objects.filter(is_active=True, share__lt=1).select_related("tenant")
    if scope.tenant_ids is not None:
        policies = policies.filter(tenant_id__in=scope.tenant_ids)
    for policy in policies.prefetch_related("rules").order_by("pk"):
        report = routing_policy_report(policy, visible_tenant_ids=scope.tenant_ids, now=scope.now)
        adoption = report["ab_test"]["full_adoption"]
        if adoption is None:
            continue
        difference = report["ab_test"]["difference"]
        opportunities.append(
            {
                "kind": "routing_rollout",
                "title": f"Adopt routing policy '{policy.name}' for all of its traffic",
                "feature": "",
                "model": ", ".join(report["ab_test"]["control"]["models"]),
                "alternative": ", ".join(report["ab_test"]["policy"]["models"]),
                "period_savings_nanos": adoption["period_savings_nanos"],
                "monthly_savings_nanos": adoption["monthly_savings_nanos"],
                "evidence": {
                    "policy_id": policy.pk,
                    "policy_requests": report["ab_test"]["policy"]["requests"],
                    "control_requests": report["ab_test"]["control"]["requests"],
                    "cost_per_request_difference_usd": money.nanos_to_str(
                        difference["cost_per_request_nanos"]
                    ),
                    "significant": difference["cost_difference_is_significant"],
                    "error_rate_difference": difference["error_rate"],
                },
            }
        )
    opportunities = [
        entry for entry in opportunities if entry["monthly_savings_nanos"] >= MIN_MONTHLY_SAVINGS_NANOS
    ]
    opportunities.sort(key=lambda entry: (-entry["monthly_savings_nanos"], entry["kind"], entry["title"]))
    for rank, entry in enumerate(opportunities, start=1):
        entry["rank"] = rank
    return {
        "scope": scope.as_dict(),
        "opportunities": opportunities,
        "monthly_savings_nanos_by_kind": _sum_by_kind(opportunities),
    }


def _sum_by_kind(opportunities: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for entry in opportunities:
        totals[entry["kind"]] += entry["monthly_savings_nanos"]
    return dict(sorted(totals.items()))
