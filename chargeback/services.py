"""Writes for usage: ingestion, rollup rebuilds and re-rating."""

from __future__ import annotations

import functools
import gc
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from audit.services import Actor, audit_record, audit_snapshot, audited_delete, audited_save
from chargeback import money
from chargeback.calendar import add_months, ceil_hour, local_date, local_midnight
from chargeback.hooks import post_ingest_hooks_active, post_ingest_hooks_run
from chargeback.ingest_counters import ingest_counters_add, ingest_counters_enabled
from chargeback.models import (
    AllocationRule,
    PriceOverride,
    RerateAudit,
    SharedCostRule,
    Statement,
    StatementLine,
    StatementNumberSeries,
    UsageRecord,
    UsageRollupHourly,
)
from chargeback.pricing import (
    GENAI_PRICES_VERSION,
    PriceBook,
    TokenBuckets,
    normalize_model,
    normalize_provider,
)
from chargeback.selectors import statement_tenant_ids, usage_cost_between, usage_totals, usage_totals_many
from chargeback.usage_input import (
    RecordError,
    check_timestamp,
    decode_record,
    event_id_of,
    payload_hash,
    reported_cost_nanos,
    token_buckets,
)
from chargeback.usage_storage import (
    IngestedRecords,
    RollupAccumulator,
    rollups_upsert,
    usage_existing_hashes,
    usage_rows_store,
    usage_tenants_lock,
)
from tenants.models import Tenant
from tenants.selectors import tenant_ancestor_ids, tenant_descendant_ids

logger = logging.getLogger(__name__)


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    unpriced: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, index: int, event_id: str | None, code: str, message: str) -> None:
        self.errors.append({"index": index, "event_id": event_id, "code": code, "message": message})

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "rejected": self.rejected,
            "unpriced": self.unpriced,
            "errors": self.errors,
        }

    def merge(self, other: IngestResult, *, index_offset: int = 0) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.rejected += other.rejected
        self.unpriced += other.unpriced
        self.errors.extend({**error, "index": error["index"] + index_offset} for error in other.errors)


class _TenantResolver:
    """Tenant slugs of one batch -> ids, checked against the caller's scope, with markup chains."""

    def __init__(self, slugs: set[str], *, scope_tenant_ids: list[int] | None, default_tenant_id: int | None):
        self.scope = None if scope_tenant_ids is None else set(scope_tenant_ids)
        self.default_tenant_id = default_tenant_id
        self.by_slug = {
            slug: (tenant_id, is_active)
            for tenant_id, slug, is_active in Tenant.objects.filter(slug__in=slugs).values_list(
                "id", "slug", "is_active"
            )
        }
        self.chains: dict[int, list[int]] = {}
        self.markups: dict[int, Decimal | None] = {}
        # Allocation rules (tag -> billable tenant), by precedence; their targets' chains up front,
        # so that markups and negotiated prices of the target apply.
        self.rules = [
            (rule.tag_key, rule.tag_value, set(tenant_descendant_ids(rule.scope_id)) if rule.scope_id else None,
             rule.target_id)
            for rule in AllocationRule.objects.filter(is_active=True).order_by("precedence", "id")
        ]  # fmt: skip
        for *_, target_id in self.rules:
            self.chains.setdefault(target_id, tenant_ancestor_ids(target_id))
        self._factors: dict[int, int] = {}  # tenant id -> money.percent_factor of its markup

    def resolve(self, slug: str | None) -> int:
        if slug is None:
            if self.default_tenant_id is None:
                raise RecordError(
                    "missing_tenant", "This key is not bound to a tenant: give each record a 'tenant'."
                )
            tenant_id = self.default_tenant_id
        else:
            found = self.by_slug.get(slug)
            if found is None or (self.scope is not None and found[0] not in self.scope):
                # The same answer for "does not exist" and "not yours": a key learns nothing about others.
                code = "unknown_tenant" if self.scope is None else "tenant_not_allowed"
                raise RecordError(code, f"Tenant {slug!r} does not exist or is outside this key's scope.")
            if not found[1]:
                raise RecordError("tenant_inactive", f"Tenant {slug!r} is deactivated.")
            tenant_id = found[0]
        if tenant_id not in self.chains:
            self.chains[tenant_id] = tenant_ancestor_ids(tenant_id)
        return tenant_id

    def allocate(self, tenant_id: int, tags: dict[str, str]) -> int:
        """The tenant a record is attributed to: the first matching allocation rule's target, else
        the reporting tenant."""
        for tag_key, tag_value, scope, target_id in self.rules:
            if tags.get(tag_key) == tag_value and (scope is None or tenant_id in scope):
                return target_id
        return tenant_id

    def load_markups(self) -> None:
        ids = {tenant_id for chain in self.chains.values() for tenant_id in chain}
        own = dict(Tenant.objects.filter(id__in=ids).values_list("id", "markup_percent"))
        for tenant_id, chain in self.chains.items():
            # The nearest tenant that declares a markup decides; none declared means list price.
            self.markups[tenant_id] = next(
                (own[ancestor] for ancestor in chain if own.get(ancestor) is not None), None
            )
        self._factors = {
            tenant_id: money.percent_factor(markup)
            for tenant_id, markup in self.markups.items()
            if markup is not None
        }

    def charged(self, tenant_id: int, list_cost_nanos: int | None) -> int | None:
        factor = self._factors.get(tenant_id)
        if list_cost_nanos is None or factor is None:
            return list_cost_nanos
        return money.apply_factor(list_cost_nanos, factor)


@contextmanager
def _cyclic_gc_paused():
    """Pause the cyclic garbage collector while a batch is processed. A batch allocates a dozen
    objects per record, none of them in reference cycles, yet each allocation burst triggers
    collections that rescan the process's whole heap: about a fifth of the ingest CPU (measured with
    bench/ingest.py). The collector resumes (and catches up) when the batch is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_cyclic_gc_paused()
def usage_records_ingest(
    *,
    items: Sequence[Any],
    scope_tenant_ids: list[int] | None,
    default_tenant_id: int | None = None,
    source: str = "api",
    now: datetime | None = None,
) -> IngestResult:
    """Validate, price and store usage records exactly once, with their rollups, in one transaction.

    `items` are undecoded JSON records (bytes or msgspec.Raw) or mappings. `scope_tenant_ids` is
    the set of tenants the caller may write (None: any); records without a tenant go to
    `default_tenant_id`. Resends of a stored record count as duplicates and change nothing; the
    same event_id with a different payload is a conflict. A bad record never costs the others.
    """
    now = now or timezone.now()
    result = IngestResult()
    decoded = []
    for index, item in enumerate(items):
        try:
            decoded.append((index, decode_record(item)))
        except RecordError as error:
            result.rejected += 1
            result.error(index, event_id_of(item), error.code, error.message)

    # Everything that is the same for many records is worked out once per batch: tenants (and
    # their markups and price overrides) and normalised provider/model names.
    slugs = {record.tenant for _, record in decoded}
    tenants = _TenantResolver(
        slugs - {None}, scope_tenant_ids=scope_tenant_ids, default_tenant_id=default_tenant_id
    )
    tenant_of: dict[str | None, int | RecordError] = {}
    for slug in slugs:
        try:
            tenant_of[slug] = tenants.resolve(slug)
        except RecordError as error:
            tenant_of[slug] = error
    tenants.load_markups()
    price_book = PriceBook(tenant_chains=tenants.chains)
    names: dict[tuple[str, str], tuple[str, str]] = {}
    max_future_skew = settings.INGEST_MAX_FUTURE_SKEW

    rows: list[tuple] = []
    row_indexes: list[int] = []  # each row's index in the batch
    seen: dict[tuple[int, str], str] = {}  # each key's first payload hash in the batch
    # Later records of a key the batch already holds: (index, key, payload hash), judged once it is
    # known whether the key was stored before (then against the stored record) or by this batch.
    repeats: list[tuple[int, tuple[int, str], str]] = []
    for index, record in decoded:
        tenant_id = tenant_of[record.tenant]
        try:
            if tenant_id.__class__ is RecordError:
                raise tenant_id.with_traceback(None)
            if tenants.rules:
                tenant_id = tenants.allocate(tenant_id, record.tags)
            buckets = token_buckets(record)
            occurred_at = check_timestamp(record.timestamp, now=now, max_future_skew=max_future_skew)
            reported = reported_cost_nanos(record)
        except RecordError as error:
            result.rejected += 1
            result.error(index, record.event_id, error.code, error.message)
            continue
        name = names.get((record.provider, record.model))
        if name is None:
            provider = normalize_provider(record.provider)
            name = names[record.provider, record.model] = (provider, normalize_model(record.model, provider))
        provider, model = name
        digest = payload_hash(record, occurred_at, buckets, reported, provider)
        key = (tenant_id, record.event_id)
        if key in seen:
            repeats.append((index, key, digest))
            continue
        seen[key] = digest
        quote = price_book.quote(
            tenant_id=tenant_id,
            provider=provider,
            model=model,
            at=occurred_at,
            buckets=buckets,
            reported_cost_nanos=reported,
        )
        rows.append(
            (
                tenant_id,
                record.event_id,
                digest,
                occurred_at,
                now,
                provider,
                record.model,
                quote.model_id,
                buckets.uncached_input,
                buckets.cached_input,
                buckets.cache_write,
                buckets.output,
                buckets.reasoning,
                record.latency_ms,
                record.status,
                record.tags,
                quote.list_cost_nanos,
                tenants.charged(tenant_id, quote.list_cost_nanos),
                reported,
                quote.pricing_source,
                quote.price_version,
                source,
                buckets.cache_write_1h,
                record.prompt_hash,
            )
        )
        row_indexes.append(index)

    with transaction.atomic():
        # A tenant deleted since its records were validated (it had no usage: PROTECT) takes its
        # records with it; the others are stored. The rest stay locked until the commit.
        gone = usage_tenants_lock({row[0] for row in rows})
        if gone:
            kept = [(row, index) for row, index in zip(rows, row_indexes, strict=True) if row[0] not in gone]
            for row, index in zip(rows, row_indexes, strict=True):
                if row[0] in gone:
                    result.rejected += 1
                    result.error(index, row[1], "unknown_tenant", _TENANT_GONE)
            rows, row_indexes = [row for row, _ in kept], [index for _, index in kept]
        # Inserts the new rows, adds exactly those to the hourly rollups, and returns the keys that
        # were already stored (usually none).
        already_stored = usage_rows_store(rows)
        stored = dict(usage_existing_hashes(sorted(already_stored))) if already_stored else {}
        for row, index in zip(rows, row_indexes, strict=True):
            if already_stored and (row[0], row[1]) in already_stored:
                _count_resend(result, index, row[1], same=stored.get((row[0], row[1])) == row[2])
            elif row[17] is None:
                result.unpriced += 1
        for index, key, digest in repeats:
            if key[0] in gone:
                result.rejected += 1
                result.error(index, key[1], "unknown_tenant", _TENANT_GONE)
            else:
                reference = stored.get(key) if key in already_stored else seen[key]
                _count_resend(result, index, key[1], same=digest == reference)
        result.accepted = len(rows) - len(already_stored)
        if post_ingest_hooks_active() and result.accepted:
            new_rows = (
                [row for row in rows if (row[0], row[1]) not in already_stored] if already_stored else rows
            )
            ingested = IngestedRecords(new_rows)
            chains = tenants.chains
            transaction.on_commit(lambda: post_ingest_hooks_run(ingested, chains))
        if ingest_counters_enabled():
            # For /metrics, once the batch is committed (a rolled-back batch counts nothing).
            counts = {"accepted": result.accepted, "duplicate": result.duplicates,
                      "conflict": result.conflicts, "rejected": result.rejected}  # fmt: skip
            transaction.on_commit(lambda: ingest_counters_add(source, counts))
    if result.unpriced:
        unpriced_models = sorted(
            {row[6] for row in rows if row[17] is None and (row[0], row[1]) not in already_stored}
        )
        logger.warning(
            "%d unpriced usage records stored (models: %s)", result.unpriced, ", ".join(unpriced_models)
        )
    result.errors.sort(key=lambda error: error["index"])
    return result


_TENANT_GONE = "The record's tenant was deleted meanwhile."


def _count_resend(result: IngestResult, index: int, event_id: str, *, same: bool) -> None:
    if same:
        result.duplicates += 1
    else:
        result.conflicts += 1
        result.error(
            index,
            event_id,
            "conflict",
            f"event_id {event_id!r} was already stored with a different payload; the stored record is kept.",
        )


def _rollup_source_rows(queryset) -> Iterator[tuple]:
    return queryset.values_list(
        "tenant_id",
        "occurred_at",
        "provider",
        "model_id",
        "tags",
        "status",
        "uncached_input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "latency_ms",
        "list_cost_nanos",
        "cost_nanos",
    ).iterator(chunk_size=5000)


@transaction.atomic
def usage_rollups_rebuild(*, tenant_ids: list[int] | None = None, start: datetime, end: datetime) -> int:
    """Recompute the hourly rollups of [start, end) (whole UTC hours) from the raw records.

    Returns the number of records summed. Rollups outside the range are untouched.
    """
    start = start.replace(minute=0, second=0, microsecond=0)
    records = UsageRecord.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
    rollups = UsageRollupHourly.objects.filter(hour__gte=start, hour__lt=end)
    if tenant_ids is not None:
        records = records.filter(tenant_id__in=tenant_ids)
        rollups = rollups.filter(tenant_id__in=tenant_ids)
    rollups.delete()
    accumulator = RollupAccumulator()
    count = 0
    for row in _rollup_source_rows(records):
        (tenant_id, occurred_at, provider, model, tags, status, *buckets, latency_ms, list_cost, cost) = row
        accumulator.add(
            tenant_id=tenant_id,
            occurred_at=occurred_at,
            provider=provider,
            model=model,
            feature=(tags or {}).get("feature", ""),
            status=status,
            buckets=buckets,
            latency_ms=latency_ms,
            list_cost_nanos=list_cost,
            cost_nanos=cost,
        )
        count += 1
    rollups_upsert(accumulator.deltas)
    return count


def usage_records_rerate(*, tenant: Tenant, start: datetime, end: datetime, actor: str) -> RerateAudit:
    """Re-price the records of `tenant` and its descendants in [start, end) with today's price book.

    An explicit, audited operation: the audit row keeps the record count and the charged totals
    before and after, and the affected hourly rollups are rebuilt in the same transaction.
    """
    tenant_ids = tenant_descendant_ids(tenant.pk)
    for statement in Statement.objects.filter(
        status=Statement.Status.FINALIZED, period_start__lt=end, period_end__gt=start
    ).select_related("tenant"):
        if set(statement_tenant_ids(statement.tenant_id)) & set(tenant_ids):
            raise StatementError(
                f"Statement {statement.number} ({statement.tenant.slug}, {statement.period_key}) is finalized; "
                "its usage cannot be re-rated. Late corrections go on the next statement."
            )
    with transaction.atomic():
        records = UsageRecord.objects.select_for_update().filter(
            tenant_id__in=tenant_ids, occurred_at__gte=start, occurred_at__lt=end
        )
        resolver = _TenantResolver(set(), scope_tenant_ids=None, default_tenant_id=None)
        resolver.chains = {tenant_id: tenant_ancestor_ids(tenant_id) for tenant_id in tenant_ids}
        resolver.load_markups()
        price_book = PriceBook(tenant_chains=resolver.chains)
        before = after = count = 0
        changed = []
        for record in records.order_by("id").iterator(chunk_size=2000):
            before += record.cost_nanos or 0
            quote = price_book.quote(
                tenant_id=record.tenant_id,
                provider=record.provider,
                model=normalize_model(record.model, record.provider),
                at=record.occurred_at,
                buckets=TokenBuckets(
                    record.uncached_input_tokens,
                    record.cached_input_tokens,
                    record.cache_write_tokens,
                    record.output_tokens,
                    record.reasoning_tokens,
                    record.cache_write_1h_tokens,
                ),
                reported_cost_nanos=record.reported_cost_nanos,
            )
            record.list_cost_nanos = quote.list_cost_nanos
            record.cost_nanos = resolver.charged(record.tenant_id, quote.list_cost_nanos)
            record.pricing_source = quote.pricing_source
            record.price_version = quote.price_version
            record.model_id = quote.model_id
            after += record.cost_nanos or 0
            count += 1
            changed.append(record)
            if len(changed) >= 2000:
                _rerate_save(changed)
        _rerate_save(changed)
        hour_start = start.replace(minute=0, second=0, microsecond=0)
        usage_rollups_rebuild(tenant_ids=tenant_ids, start=hour_start, end=ceil_hour(end))
        return RerateAudit.objects.create(
            tenant=tenant,
            period_start=start,
            period_end=end,
            records=count,
            cost_nanos_before=before,
            cost_nanos_after=after,
            actor=actor,
        )


def _rerate_save(records: list[UsageRecord]) -> None:
    UsageRecord.objects.bulk_update(
        records, ["list_cost_nanos", "cost_nanos", "pricing_source", "price_version", "model_id"]
    )
    records.clear()


# --- statements ----------------------------------------------------------------------------------

# Bucket lines of a statement: (token type, rollup field, LinearPrice field, label).
_STATEMENT_BUCKETS = (
    ("uncached_input", "uncached_input_tokens", "uncached_input", "input tokens"),
    ("cached_input", "cached_input_tokens", "cached_input", "cached input tokens"),
    ("cache_write", "cache_write_tokens", "cache_write", "cache write tokens"),
    ("output", None, "output", "output tokens"),
    ("reasoning", "reasoning_tokens", "reasoning", "reasoning tokens"),
)
ADJUSTMENT_LOOKBACK_MONTHS = 12


class StatementError(Exception):
    """A statement operation that is not allowed in the statement's state."""


def statement_period(tenant: Tenant, period_key: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar month `period_key` (YYYY-MM) in the tenant's zone."""
    first = date.fromisoformat(f"{period_key}-01")
    return local_midnight(first, tenant.time_zone), local_midnight(add_months(first, 1), tenant.time_zone)


_STATEMENT_GROUP_BY = ("tenant_id", "provider", "model")


class _UnitPrices:
    """The list unit prices a statement line shows: a model's base-tier per-token prices for a
    tenant (its chain's overrides, else genai-prices) at the middle of the period, resolved once per
    (tenant chain, provider, model, moment)."""

    def __init__(self, chains: dict[int, list[int]]):
        self.chains = chains
        self.price_book = PriceBook(tenant_chains=chains)
        self.cache: dict[tuple, Any] = {}

    def at(self, start: datetime, end: datetime):
        middle = start + (end - start) / 2

        def unit_prices(tenant_id: int, provider: str, model: str):
            key = (tuple(self.chains.get(tenant_id, (tenant_id,))), provider, model, middle)
            if key not in self.cache:
                self.cache[key] = self.price_book.list_unit_prices(
                    tenant_id=tenant_id, provider=provider, model=model, at=middle
                )
            return self.cache[key]

        return unit_prices


@functools.lru_cache(maxsize=4096)
def _unit_price_text(attos_per_token: int) -> str:
    """USD per million tokens, as a statement line shows it."""
    return money.nanos_to_str(money.attos_to_nanos(attos_per_token * 10**6))


def _usage_lines(
    totals: dict[tuple, dict[str, int]],
    *,
    slugs: dict[int, str],
    unit_prices: Callable[[int, str, str], Any],
    markup_percent: Callable[[], Decimal | None],
) -> tuple[list[dict], int]:
    """Usage, price-difference and markup lines (exact nanos), and the exact usage cost, from one
    statement's usage totals grouped by _STATEMENT_GROUP_BY. `unit_prices(tenant_id, provider,
    model)` gives the unit prices lines show; `markup_percent()` the percent the markup line names."""
    lines: list[dict] = []
    markup = usage_cost = 0
    for (tenant_id, provider, model), sums in sorted(
        totals.items(), key=lambda item: (slugs[item[0][0]], *item[0][1:])
    ):
        common = {"tenant_slug": slugs[tenant_id], "provider": provider, "model": model}
        usage_cost += sums["cost_nanos"]
        markup += sums["cost_nanos"] - sums["list_cost_nanos"]
        prices = unit_prices(tenant_id, provider, model)
        priced_requests = sums["requests"] - sums["unpriced_requests"]
        if prices is None or priced_requests == 0:
            note = f", {sums['unpriced_requests']} unpriced" if sums["unpriced_requests"] else ""
            lines.append({**common, "kind": StatementLine.Kind.USAGE, "description": f"{provider} {model}: "
                          f"{sums['requests']} requests{note}", "quantity": sums["requests"], "unit": "requests",
                          "requests": sums["requests"], "amount_nanos": sums["list_cost_nanos"]})  # fmt: skip
            continue
        bucket_total = 0
        for token_type, sum_field, price_field, label in _STATEMENT_BUCKETS:
            quantity = (
                sums["output_tokens"] - sums["reasoning_tokens"] if sum_field is None else sums[sum_field]
            )
            if not quantity:
                continue
            attos = getattr(prices, price_field)
            amount = money.attos_to_nanos(quantity * attos)
            bucket_total += amount
            lines.append({**common, "kind": StatementLine.Kind.USAGE, "description": f"{provider} {model} {label}",
                          "token_type": token_type, "quantity": quantity, "unit": "tokens",
                          "unit_price": _unit_price_text(attos),
                          "unit_scale": 10**6, "amount_nanos": amount})  # fmt: skip
        lines[-1]["requests"] = sums["requests"]
        difference = sums["list_cost_nanos"] - bucket_total
        if difference:
            lines.append(
                {
                    **common,
                    "kind": StatementLine.Kind.PRICE_DIFFERENCE,
                    "description": f"{provider} "
                    f"{model}: long-context tiers, dated prices and per-request fees",
                    "amount_nanos": difference,
                }
            )
    if markup:
        percent = markup_percent()
        label = "Markup" if markup > 0 else "Discount"
        lines.append({"kind": StatementLine.Kind.MARKUP, "description": f"{label} ({percent}%)" if percent is not None
                      else label, "amount_nanos": markup})  # fmt: skip
    return lines, usage_cost


def tenant_markup_percent(tenant: Tenant) -> Decimal | None:
    chain = tenant_ancestor_ids(tenant.pk)
    own = dict(Tenant.objects.filter(id__in=chain).values_list("id", "markup_percent"))
    return next((own[tenant_id] for tenant_id in chain if own.get(tenant_id) is not None), None)


def _pool_tenant_ids() -> set[int]:
    pools = SharedCostRule.objects.values_list("pool_id", flat=True)
    return set(tenant_descendant_ids(*pools)) if pools else set()


def shared_cost_allocation(rule: SharedCostRule, period_key: str) -> dict[int, int]:
    """Cents of the pool's monthly cost (the pool's own calendar month) per receiving tenant;
    the shares add up to the pool's cost in cents exactly."""
    start, end = statement_period(rule.pool, period_key)
    pool_nanos = usage_cost_between(tenant_ids=tenant_descendant_ids(rule.pool_id), start=start, end=end)
    pool_cents = money.round_to_cents(pool_nanos)
    if rule.method == SharedCostRule.Method.OWNER:
        return {rule.owner_id: pool_cents}
    targets = sorted(rule.targets.values_list("id", flat=True))
    if not targets:
        return {}
    if rule.method == SharedCostRule.Method.EVEN:
        weights = [1] * len(targets)
    else:
        # Each target's usage over what its statement covers (usage_cost_between of
        # statement_tenant_ids), read for all targets at once.
        tree = _TenantTree()
        covers = {target: tree.statement_tenant_ids(target) for target in targets}
        costs = {
            key[0]: sums["cost_nanos"]
            for key, sums in usage_totals(
                tenant_ids=sorted(set().union(*covers.values())),
                start=start,
                end=end,
                group_by=("tenant_id",),
            ).items()
        }
        weights = [max(sum(costs.get(tenant_id, 0) for tenant_id in covers[target]), 0) for target in targets]
    return dict(zip(targets, money.split_largest_remainder(pool_cents, weights), strict=True))


def _shared_allocations(period_key: str) -> list[tuple[SharedCostRule, dict[int, int]]]:
    """Every shared-cost rule with its allocation for the month (computed once for any number of
    statements)."""
    rules = SharedCostRule.objects.select_related("pool").prefetch_related("targets").order_by("pk")
    return [(rule, shared_cost_allocation(rule, period_key)) for rule in rules]


def _shared_lines(tenant_id: int, allocations: list[tuple[SharedCostRule, dict[int, int]]]) -> list[dict]:
    lines = []
    for rule, allocation in allocations:
        cents = allocation.get(tenant_id)
        if cents:
            method = rule.get_method_display().lower()
            lines.append({"kind": StatementLine.Kind.SHARED, "description": f"Shared cost: {rule.name} "
                          f"({rule.pool.slug}, {method})", "tenant_slug": rule.pool.slug,
                          "amount_nanos": cents * money.NANOS_PER_CENT})  # fmt: skip
    return lines


def _adjustment_earliest(period_key: str) -> str:
    return f"{add_months(date.fromisoformat(f'{period_key}-01'), -ADJUSTMENT_LOOKBACK_MONTHS):%Y-%m}"


def _adjustment_inputs(
    tenant: Tenant, tenant_ids: list[int], period_key: str, exclude_id: int | None
) -> tuple[list[Statement], dict[int, int], dict[str, int]]:
    """One tenant's finalized earlier statements in the lookback (by month), what each one's usage
    costs now (by statement id), and what live statements other than `exclude_id` already adjusted
    for each month."""
    earlier = list(
        Statement.objects.filter(
            tenant=tenant,
            status=Statement.Status.FINALIZED,
            period_key__lt=period_key,
            period_key__gte=_adjustment_earliest(period_key),
        ).order_by("period_key")
    )
    now_costs, adjusted = {}, {}
    for statement in earlier:
        now_costs[statement.pk] = usage_cost_between(
            tenant_ids=tenant_ids, start=statement.period_start, end=statement.period_end
        )
        adjusted[statement.period_key] = (
            StatementLine.objects.filter(
                statement__tenant=tenant,
                adjustment_period_key=statement.period_key,
                kind=StatementLine.Kind.ADJUSTMENT,
            )
            .exclude(statement__status=Statement.Status.VOID)
            .exclude(statement_id=exclude_id)
            .aggregate(total=Sum("amount_nanos"))["total"]
            or 0
        )
    return earlier, now_costs, adjusted


def _adjustment_lines(
    earlier_statements: list[Statement], now_costs: dict[int, int], adjusted: dict[str, int]
) -> list[dict]:
    """Late usage for finalized earlier months: what their usage costs now, less what their statement
    billed and what later statements already adjusted."""
    lines = []
    for earlier in earlier_statements:
        late = now_costs[earlier.pk] - earlier.usage_cost_nanos - adjusted.get(earlier.period_key, 0)
        if late:
            lines.append({"kind": StatementLine.Kind.ADJUSTMENT, "description": f"Usage reported late for "
                          f"{earlier.period_key} (statement {earlier.number})", "amount_nanos": late,
                          "adjustment_period_key": earlier.period_key})  # fmt: skip
    return lines


@transaction.atomic
def statement_generate(*, tenant: Tenant, period_key: str, now: datetime | None = None) -> Statement:
    """Create or regenerate the draft statement of a billable tenant for a month of its zone.

    A finalized statement is returned unchanged (immutable); a voided one is replaced by a new
    draft that references it. Lines are exact in nanos and rounded to cents so that they add up
    to the rounded total (largest remainder); the total is the sum of the rounded lines.
    """
    now = now or timezone.now()
    start, end = statement_period(tenant, period_key)
    statement = (
        Statement.objects.select_for_update()
        .filter(tenant=tenant, period_key=period_key)
        .exclude(status=Statement.Status.VOID)
        .first()
    )
    if statement is not None and statement.status == Statement.Status.FINALIZED:
        return statement
    if statement is None:
        voided = Statement.objects.filter(tenant=tenant, period_key=period_key, status=Statement.Status.VOID)
        statement = Statement(
            tenant=tenant, period_key=period_key, replaces=voided.order_by("-voided_at").first()
        )
    tenant_ids = sorted(set(statement_tenant_ids(tenant.pk)) - _pool_tenant_ids())
    totals = usage_totals(tenant_ids=tenant_ids, start=start, end=end, group_by=_STATEMENT_GROUP_BY)
    used = {key[0] for key in totals}
    usage, usage_cost = _usage_lines(
        totals,
        slugs=dict(Tenant.objects.filter(id__in=used).values_list("id", "slug")),
        unit_prices=_UnitPrices({tenant_id: tenant_ancestor_ids(tenant_id) for tenant_id in used}).at(
            start, end
        ),
        markup_percent=lambda: tenant_markup_percent(tenant),
    )
    lines = (
        usage
        + _shared_lines(tenant.pk, _shared_allocations(period_key))
        + _adjustment_lines(*_adjustment_inputs(tenant, tenant_ids, period_key, statement.pk))
    )
    previous = (
        Statement.objects.filter(tenant=tenant, period_key=_previous_period_key(period_key))
        .exclude(status=Statement.Status.VOID)
        .values_list("total_cents", flat=True)
        .first()
    )
    rows = _statement_fill(
        statement, tenant, (start, end), lines, usage_cost=usage_cost, previous_total_cents=previous,
        notes=_statement_notes(), now=now,
    )  # fmt: skip
    statement.save()
    statement.lines.all().delete()
    StatementLine.objects.bulk_create(StatementLine(statement=statement, **row) for row in rows)
    return statement


def _previous_period_key(period_key: str) -> str:
    return f"{add_months(date.fromisoformat(period_key + '-01'), -1):%Y-%m}"


def _statement_fill(
    statement: Statement,
    tenant: Tenant,
    period: tuple[datetime, datetime],
    lines: list[dict],
    *,
    usage_cost: int,
    previous_total_cents: int | None,
    notes: str,
    now: datetime,
) -> list[dict]:
    """Set a draft's fields from its lines (rounded to cents, conserving the rounded total) and
    return its line rows (the lines with their position and cents)."""
    cents = money.cents_from_nanos_conserving([line["amount_nanos"] for line in lines])
    statement.period_start, statement.period_end = period
    statement.time_zone = tenant.time_zone
    statement.total_cents = sum(cents)
    statement.usage_cost_nanos = usage_cost
    statement.previous_total_cents = previous_total_cents
    statement.tenant_name, statement.billing_email = tenant.name, tenant.billing_email
    statement.issuer_name = settings.STATEMENT_ISSUER_NAME
    statement.notes = notes
    statement.generated_at = now
    return [
        {**line, "position": position, "amount_cents": amount_cents}
        for position, (line, amount_cents) in enumerate(zip(lines, cents, strict=True), start=1)
    ]


def _statements_insert(statements: list[Statement]) -> None:
    """Insert new statements and set their ids: on PostgreSQL one COPY and one SELECT of the ids (a
    tenant has one live statement a month), bulk INSERTs elsewhere."""
    if not statements:
        return
    if connection.vendor != "postgresql":
        Statement.objects.bulk_create(statements, batch_size=500)
        return
    fields = [f for f in Statement._meta.concrete_fields if not f.primary_key]
    with connection.cursor() as wrapper:
        with wrapper.cursor.copy(
            f"COPY {Statement._meta.db_table} ({', '.join(f.column for f in fields)}) FROM STDIN"
        ) as copy:
            for statement in statements:
                copy.write_row([_copy_value(getattr(statement, f.attname)) for f in fields])
        by_tenant = {statement.tenant_id: statement for statement in statements}
        wrapper.execute(
            f"SELECT tenant_id, id FROM {Statement._meta.db_table} WHERE period_key = %s AND status <> %s"
            " AND tenant_id = ANY(%s)",
            [statements[0].period_key, Statement.Status.VOID.value, list(by_tenant)],
        )
        for tenant_id, statement_id in wrapper.fetchall():
            by_tenant[tenant_id].pk = statement_id
    for statement in statements:
        statement._state.adding, statement._state.db = False, connection.alias


def _statement_lines_insert(rows: list[tuple[Statement, list[dict]]]) -> None:
    """Insert the line rows of saved statements: COPY on PostgreSQL (a statement run writes tens of
    thousands of lines), bulk INSERTs elsewhere."""
    if connection.vendor != "postgresql":
        StatementLine.objects.bulk_create(
            (StatementLine(statement=statement, **row) for statement, lines in rows for row in lines),
            batch_size=2000,
        )
        return
    fields = [f for f in StatementLine._meta.concrete_fields if f.attname != "id"]
    # Every column's default, in column order: {**defaults, **row} lists a row's values in that order.
    defaults = {f.attname: f.get_default() for f in fields}
    columns = ", ".join(f.column for f in fields)
    with (
        connection.cursor() as wrapper,
        wrapper.cursor.copy(f"COPY {StatementLine._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for statement, lines in rows:
            for row in lines:
                values = {**defaults, **row, "statement_id": statement.pk}
                values["kind"] = _copy_value(values["kind"])
                copy.write_row(tuple(values.values()))


def _copy_value(value):
    return value.value if isinstance(value, Enum) else value


def _statement_notes() -> str:
    notes = [f"Prices: {GENAI_PRICES_VERSION}, with the price overrides in force on each call's date."]
    rules = list(AllocationRule.objects.filter(is_active=True).select_related("target", "scope"))
    if rules:
        notes.append(
            "Allocation rules, by precedence: "
            + "; ".join(
                f"{rule.precedence}. {rule.tag_key}={rule.tag_value} -> {rule.target.slug}"
                + (f" (usage of {rule.scope.slug})" if rule.scope else "")
                for rule in rules
            )
            + ". Usage matching no rule stays on the tenant that reported it."
        )
    for rule in SharedCostRule.objects.select_related("pool", "owner"):
        target = rule.owner.slug if rule.owner else "its targets"
        notes.append(f"Shared cost '{rule.name}': the cost of {rule.pool.slug} goes to {target} "
                     f"({rule.get_method_display().lower()}), conserved to the cent.")  # fmt: skip
    return "\n".join(notes)


# What the audit log keeps of a statement (not its lines or PDF, which the statement's hash pins).
_STATEMENT_AUDIT_FIELDS = (
    "status", "number", "period_key", "total_cents", "finalized_at", "voided_at", "void_reason", "pdf_sha256",
)  # fmt: skip


def statement_finalize(*, statement_id: int, now: datetime | None = None, actor: Actor = None) -> Statement:
    """Regenerate the draft one last time, give it the next number of the year's gapless series
    (under a row lock), freeze it and store its PDF with the PDF's SHA-256. Finalizing a finalized
    statement returns it unchanged; a void one cannot be finalized. Audited as
    `statement.finalize` by `actor` (None: the system, e.g. beat)."""
    from chargeback.statement_documents import statement_pdf_render  # reportlab is only needed here

    now = now or timezone.now()
    with transaction.atomic():
        statement = Statement.objects.select_for_update().select_related("tenant").get(pk=statement_id)
        if statement.status == Statement.Status.FINALIZED:
            return statement
        if statement.status == Statement.Status.VOID:
            raise StatementError(f"Statement {statement.pk} is void; generate a replacement instead.")
        before = audit_snapshot(statement, fields=_STATEMENT_AUDIT_FIELDS)
        statement = statement_generate(tenant=statement.tenant, period_key=statement.period_key, now=now)
        prefix = f"{settings.STATEMENT_NUMBER_PREFIX}-{now.year}"
        StatementNumberSeries.objects.get_or_create(prefix=prefix)
        series = StatementNumberSeries.objects.select_for_update().get(prefix=prefix)
        statement.number = f"{prefix}-{series.next_value:06d}"
        series.next_value += 1
        series.save(update_fields=["next_value"])
        statement.status = Statement.Status.FINALIZED
        statement.finalized_at = now
        pdf = statement_pdf_render(statement)
        statement.pdf = pdf
        statement.pdf_sha256 = hashlib.sha256(pdf).hexdigest()
        statement.save()
        audit_record(
            actor=actor,
            action="statement.finalize",
            instance=statement,
            tenant_id=statement.tenant_id,
            before=before,
            after=audit_snapshot(statement, fields=_STATEMENT_AUDIT_FIELDS),
        )
        return statement


def statement_void(
    *, statement_id: int, reason: str, now: datetime | None = None, actor: Actor = None
) -> Statement:
    """Void a finalized statement: it keeps its number and document; a replacement is a new draft.
    Audited as `statement.void` by `actor`."""
    with transaction.atomic():
        statement = Statement.objects.select_for_update().get(pk=statement_id)
        if statement.status != Statement.Status.FINALIZED:
            raise StatementError(f"Only a finalized statement can be voided; this one is {statement.status}.")
        before = audit_snapshot(statement, fields=_STATEMENT_AUDIT_FIELDS)
        statement.status = Statement.Status.VOID
        statement.voided_at = now or timezone.now()
        statement.void_reason = reason
        statement.save(update_fields=["status", "voided_at", "void_reason"])
        audit_record(
            actor=actor,
            action="statement.void",
            instance=statement,
            tenant_id=statement.tenant_id,
            before=before,
            after=audit_snapshot(statement, fields=_STATEMENT_AUDIT_FIELDS),
        )
        return statement


def statements_generate(
    *,
    period_key: str,
    finalize: bool = False,
    tenant_ids: list[int] | None = None,
    now: datetime | None = None,
) -> list[Statement]:
    """Drafts (and optionally final statements) for every billable tenant for a month, by slug.

    The drafts are generated together, in one transaction, and are exactly what statement_generate
    gives one tenant at a time: the same code builds each statement's lines, from reads done once
    for all (one rollup query for every tenant's month, whatever its zone, plus one raw-record query
    for the partial edge hours of zones whose months do not start on a UTC hour, rather than
    several queries per tenant; shared-cost allocations once per rule; the tenant tree in one
    query; prices once per tenant chain and model) and written in bulk (COPY on PostgreSQL).
    Finalizing then numbers and renders each draft in turn (statement_finalize).
    """
    tenants = Tenant.objects.filter(is_billable=True, is_active=True)
    if tenant_ids is not None:
        tenants = tenants.filter(id__in=tenant_ids)
    statements = _statements_draft_many(list(tenants.order_by("slug")), period_key, now or timezone.now())
    if finalize:
        statements = [
            statement_finalize(statement_id=statement.pk)
            if statement.status == Statement.Status.DRAFT
            else statement
            for statement in statements
        ]
    return statements


# Statement fields a regeneration sets (_statement_fill), for bulk updates of existing drafts.
_DRAFT_FIELDS = (
    "period_start", "period_end", "time_zone", "total_cents", "usage_cost_nanos", "previous_total_cents",
    "tenant_name", "billing_email", "issuer_name", "notes", "generated_at",
)  # fmt: skip


class _TenantTree:
    """Every tenant's parent, slug, billability and markup from one query; ancestor chains and who
    bills whom are walked in memory (the answers of tenant_ancestor_ids, statement_tenant_ids and
    tenant_markup_percent, for all tenants at once)."""

    def __init__(self):
        self.parent: dict[int, int | None] = {}
        self.slug: dict[int, str] = {}
        self.markup: dict[int, Decimal | None] = {}
        self.billable: set[int] = set()
        self._chains: dict[int, list[int]] = {}
        self._children: dict[int, list[int]] = {}
        for tenant_id, parent_id, slug, is_billable, markup in Tenant.objects.values_list(
            "id", "parent_id", "slug", "is_billable", "markup_percent"
        ):
            self.parent[tenant_id], self.slug[tenant_id], self.markup[tenant_id] = parent_id, slug, markup
            self._children.setdefault(parent_id, []).append(tenant_id)
            if is_billable:
                self.billable.add(tenant_id)

    def chain(self, tenant_id: int) -> list[int]:
        """The tenant, its parent, ..., the root."""
        chain = self._chains.get(tenant_id)
        if chain is None:
            chain, current = [], tenant_id
            while current is not None and current not in chain:
                chain.append(current)
                current = self.parent.get(current)
            self._chains[tenant_id] = chain
        return chain

    def statement_tenant_ids(self, tenant_id: int) -> list[int]:
        """The tenant's subtree less the subtrees of billable tenants below it (statement_tenant_ids)."""
        found, stack = {tenant_id}, [tenant_id]
        while stack:
            for child in self._children.get(stack.pop(), ()):
                if child not in found and child not in self.billable:
                    found.add(child)
                    stack.append(child)
        return sorted(found)

    def covered(self, exclude: set[int]) -> dict[int, list[int]]:
        """Billable tenant -> the tenants its statement covers (statement_tenant_ids: those whose
        nearest billable tenant at or above them it is), less `exclude`."""
        covered: dict[int, list[int]] = {}
        for tenant_id in sorted(self.parent):
            if tenant_id in exclude:
                continue
            biller = next((ancestor for ancestor in self.chain(tenant_id) if ancestor in self.billable), None)
            if biller is not None:
                covered.setdefault(biller, []).append(tenant_id)
        return covered

    def markup_percent(self, tenant_id: int) -> Decimal | None:
        return next((self.markup[a] for a in self.chain(tenant_id) if self.markup.get(a) is not None), None)


def _usage_totals_many(
    covered: dict[int, list[int]], periods: dict[int, tuple[datetime, datetime]], group_by: tuple[str, ...]
) -> dict[int, dict[tuple, dict[str, int]]]:
    """usage_totals of many statements (billable tenant -> its period), split back by statement:
    the tenants each covers, in one scope per distinct period (time zone), read together by
    usage_totals_many (one rollup query, and one raw-record query for the edges of periods that
    do not start and end on a UTC hour). `group_by` must start with tenant_id."""
    by_period: dict[tuple[datetime, datetime], list[int]] = {}
    owner: dict[int, int] = {}
    for biller, period in periods.items():
        tenant_ids = covered.get(biller, ())
        by_period.setdefault(period, []).extend(tenant_ids)
        owner.update(dict.fromkeys(tenant_ids, biller))
    totals: dict[int, dict[tuple, dict[str, int]]] = {biller: {} for biller in periods}
    scopes = [(sorted(tenant_ids), start, end) for (start, end), tenant_ids in by_period.items()]
    for key, sums in usage_totals_many(scopes=scopes, group_by=group_by).items():
        totals[owner[key[0]]][key] = sums
    return totals


def _adjustment_inputs_many(
    covered: dict[int, list[int]], period_key: str, exclude_ids: dict[int, int | None]
) -> dict[int, tuple[list[Statement], dict[int, int], dict[str, int]]]:
    """_adjustment_inputs of many billable tenants (the keys of `exclude_ids`, each with the id of
    its draft being regenerated, if any), with one usage read per earlier month."""
    earlier = list(
        Statement.objects.filter(
            tenant_id__in=list(exclude_ids),
            status=Statement.Status.FINALIZED,
            period_key__lt=period_key,
            period_key__gte=_adjustment_earliest(period_key),
        ).order_by("tenant_id", "period_key")
    )
    if not earlier:
        return {}
    by_month: dict[str, list[Statement]] = {}  # a tenant has one finalized statement a month
    for statement in earlier:
        by_month.setdefault(statement.period_key, []).append(statement)
    now_costs: dict[int, int] = {}
    for statements in by_month.values():
        totals = _usage_totals_many(
            covered,
            {statement.tenant_id: (statement.period_start, statement.period_end) for statement in statements},
            ("tenant_id",),
        )
        for statement in statements:
            now_costs[statement.pk] = sum(sums["cost_nanos"] for sums in totals[statement.tenant_id].values())
    adjusted: dict[int, dict[str, int]] = {}
    for row in (
        StatementLine.objects.filter(
            statement__tenant_id__in={statement.tenant_id for statement in earlier},
            adjustment_period_key__in={statement.period_key for statement in earlier},
            kind=StatementLine.Kind.ADJUSTMENT,
        )
        .exclude(statement__status=Statement.Status.VOID)
        .values("statement__tenant_id", "adjustment_period_key", "statement_id")
        .annotate(total=Sum("amount_nanos"))
    ):
        tenant_id = row["statement__tenant_id"]
        if row["statement_id"] != exclude_ids.get(tenant_id):
            months = adjusted.setdefault(tenant_id, {})
            months[row["adjustment_period_key"]] = months.get(row["adjustment_period_key"], 0) + row["total"]
    inputs: dict[int, tuple[list[Statement], dict[int, int], dict[str, int]]] = {}
    for statement in earlier:
        statements, costs, _ = inputs.setdefault(
            statement.tenant_id, ([], {}, adjusted.get(statement.tenant_id, {}))
        )
        statements.append(statement)
        costs[statement.pk] = now_costs[statement.pk]
    return inputs


@transaction.atomic
def _statements_draft_many(tenants: list[Tenant], period_key: str, now: datetime) -> list[Statement]:
    """statement_generate for many billable tenants at once, with batched reads and bulk writes."""
    if not tenants:
        return []
    live = {
        statement.tenant_id: statement
        for statement in Statement.objects.select_for_update()
        .filter(tenant_id__in=[tenant.pk for tenant in tenants], period_key=period_key)
        .exclude(status=Statement.Status.VOID)
    }
    drafts = [
        tenant
        for tenant in tenants
        if tenant.pk not in live or live[tenant.pk].status != Statement.Status.FINALIZED
    ]
    replaced: dict[int, Statement] = {}
    for voided in Statement.objects.filter(
        tenant_id__in=[tenant.pk for tenant in drafts if tenant.pk not in live],
        period_key=period_key,
        status=Statement.Status.VOID,
    ).order_by("tenant_id", "-voided_at"):
        replaced.setdefault(voided.tenant_id, voided)

    tree = _TenantTree()
    covered = tree.covered(exclude=_pool_tenant_ids())
    periods = {tenant.pk: statement_period(tenant, period_key) for tenant in drafts}
    totals = _usage_totals_many(covered, periods, _STATEMENT_GROUP_BY)
    unit_prices = _UnitPrices(
        {tenant_id: tree.chain(tenant_id) for sums in totals.values() for tenant_id, *_ in sums}
    )
    allocations = _shared_allocations(period_key)
    adjustments = _adjustment_inputs_many(
        covered,
        period_key,
        {tenant.pk: live[tenant.pk].pk if tenant.pk in live else None for tenant in drafts},
    )
    previous = dict(
        Statement.objects.filter(
            tenant_id__in=[tenant.pk for tenant in drafts], period_key=_previous_period_key(period_key)
        )
        .exclude(status=Statement.Status.VOID)
        .values_list("tenant_id", "total_cents")
    )
    notes = _statement_notes()

    created: list[Statement] = []
    updated: list[Statement] = []
    statement_lines: list[tuple[Statement, list[dict]]] = []
    for tenant in drafts:
        statement = live.get(tenant.pk) or Statement(
            tenant=tenant, period_key=period_key, replaces=replaced.get(tenant.pk)
        )
        statement.tenant = tenant
        start, end = periods[tenant.pk]
        usage, usage_cost = _usage_lines(
            totals[tenant.pk],
            slugs=tree.slug,
            unit_prices=unit_prices.at(start, end),
            markup_percent=lambda tenant_id=tenant.pk: tree.markup_percent(tenant_id),
        )
        lines = (
            usage
            + _shared_lines(tenant.pk, allocations)
            + _adjustment_lines(*adjustments.get(tenant.pk, ([], {}, {})))
        )
        rows = _statement_fill(
            statement, tenant, (start, end), lines, usage_cost=usage_cost,
            previous_total_cents=previous.get(tenant.pk), notes=notes, now=now,
        )  # fmt: skip
        statement_lines.append((statement, rows))
        (updated if statement.pk else created).append(statement)
    if updated:
        Statement.objects.bulk_update(updated, _DRAFT_FIELDS, batch_size=500)
        StatementLine.objects.filter(statement_id__in=[statement.pk for statement in updated]).delete()
    _statements_insert(created)
    _statement_lines_insert(statement_lines)
    for tenant in tenants:
        if tenant.pk in live:
            live[tenant.pk].tenant = tenant
    generated = {statement.tenant_id: statement for statement in created}
    return [generated.get(tenant.pk) or live[tenant.pk] for tenant in tenants]


def statements_monthly_run(*, now: datetime | None = None) -> dict[str, int]:
    """Beat's job, safe to run any number of times: from the configured day of each tenant's month,
    draft the previous month's statement; after the grace period, finalize it (if enabled)."""
    now = now or timezone.now()
    counts = {"generated": 0, "finalized": 0}
    grace = timedelta(days=settings.STATEMENT_FINALIZE_GRACE_DAYS)
    for tenant in Tenant.objects.filter(is_billable=True, is_active=True):
        today = local_date(now, tenant.time_zone)
        period_key = f"{add_months(today.replace(day=1), -1):%Y-%m}"
        statement = (
            Statement.objects.filter(tenant=tenant, period_key=period_key)
            .exclude(status=Statement.Status.VOID)
            .first()
        )
        if statement is None and today.day >= settings.STATEMENT_GENERATION_DAY:
            statement = statement_generate(tenant=tenant, period_key=period_key, now=now)
            counts["generated"] += 1
        if (
            statement is not None
            and statement.status == Statement.Status.DRAFT
            and settings.STATEMENT_AUTO_FINALIZE
            and now >= statement.period_end + grace
        ):
            statement_finalize(statement_id=statement.pk, now=now)
            counts["finalized"] += 1
    return counts


# Price overrides and allocation rules (admin) ----------------------------------------------------


def price_override_save(*, override: PriceOverride, actor: Actor = None) -> PriceOverride:
    """Validate and save a new or changed price override, audited as `price_override.create` or
    `.update` with its values before and after. Records already rated keep their prices until a
    re-rating (`manage.py rerate`)."""
    return audited_save(instance=override, action="price_override", actor=actor, tenant_id=override.tenant_id)


def price_override_delete(*, override: PriceOverride, actor: Actor = None) -> None:
    """Delete a price override (audited as `price_override.delete`)."""
    audited_delete(instance=override, action="price_override", actor=actor, tenant_id=override.tenant_id)


def _allocation_rule_tenant_id(rule: AllocationRule) -> int | None:
    # A rule moves usage reported within its scope; without a scope it concerns every tenant, so
    # only global keys and staff see its events.
    return rule.scope_id


def allocation_rule_save(*, rule: AllocationRule, actor: Actor = None) -> AllocationRule:
    """Validate and save a new or changed allocation rule (audited as `allocation_rule.create` or
    `.update`). It applies to usage ingested from now on; statements regenerate from the rollups."""
    return audited_save(
        instance=rule, action="allocation_rule", actor=actor, tenant_id=_allocation_rule_tenant_id(rule)
    )


def allocation_rule_delete(*, rule: AllocationRule, actor: Actor = None) -> None:
    """Delete an allocation rule (audited as `allocation_rule.delete`)."""
    audited_delete(
        instance=rule, action="allocation_rule", actor=actor, tenant_id=_allocation_rule_tenant_id(rule)
    )
