"""Writes for usage: ingestion, rollup rebuilds and re-rating."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chargeback import money
from chargeback.calendar import ceil_hour
from chargeback.hooks import IngestedRecord, post_ingest_hooks_active, post_ingest_hooks_run
from chargeback.models import RerateAudit, UsageRecord, UsageRollupHourly
from chargeback.pricing import PriceBook, TokenBuckets, normalize_model, normalize_provider
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
    RollupAccumulator,
    rollups_upsert,
    usage_existing_hashes,
    usage_rows_store,
)
from tenants.models import Tenant
from tenants.selectors import tenant_ancestor_ids, tenant_descendant_ids

logger = logging.getLogger(__name__)
_TAGS_ENCODER = msgspec.json.Encoder(order="sorted")


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

    def load_markups(self) -> None:
        ids = {tenant_id for chain in self.chains.values() for tenant_id in chain}
        own = dict(Tenant.objects.filter(id__in=ids).values_list("id", "markup_percent"))
        for tenant_id, chain in self.chains.items():
            # The nearest tenant that declares a markup decides; none declared means list price.
            self.markups[tenant_id] = next(
                (own[ancestor] for ancestor in chain if own.get(ancestor) is not None), None
            )

    def charged(self, tenant_id: int, list_cost_nanos: int | None) -> int | None:
        markup = self.markups.get(tenant_id)
        if list_cost_nanos is None or markup is None:
            return list_cost_nanos
        return money.apply_percent(list_cost_nanos, markup)


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

    tenants = _TenantResolver(
        {record.tenant for _, record in decoded if record.tenant is not None},
        scope_tenant_ids=scope_tenant_ids,
        default_tenant_id=default_tenant_id,
    )
    prepared = []
    for index, record in decoded:
        try:
            tenant_id = tenants.resolve(record.tenant)
            buckets = token_buckets(record)
            occurred_at = check_timestamp(
                record.timestamp, now=now, max_future_skew=settings.INGEST_MAX_FUTURE_SKEW
            )
            reported = reported_cost_nanos(record)
        except RecordError as error:
            result.rejected += 1
            result.error(index, record.event_id, error.code, error.message)
            continue
        prepared.append((index, record, tenant_id, buckets, occurred_at, reported))

    tenants.load_markups()
    price_book = PriceBook(tenant_chains=tenants.chains)
    rows: list[tuple] = []
    row_meta: list[tuple[int, TokenBuckets, dict[str, str]]] = []
    seen: dict[tuple[int, str], tuple[int, str]] = {}
    for index, record, tenant_id, buckets, occurred_at, reported in prepared:
        provider = normalize_provider(record.provider)
        model = normalize_model(record.model, provider)
        digest = payload_hash(record, occurred_at, buckets, reported)
        key = (tenant_id, record.event_id)
        earlier = seen.get(key)
        if earlier is not None:
            _count_resend(result, index, record.event_id, same=earlier[1] == digest)
            continue
        seen[key] = (index, digest)
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
                _TAGS_ENCODER.encode(record.tags).decode(),
                quote.list_cost_nanos,
                tenants.charged(tenant_id, quote.list_cost_nanos),
                reported,
                quote.pricing_source,
                quote.price_version,
                source,
                buckets.cache_write_1h,
            )
        )
        row_meta.append((index, buckets, record.tags))

    with transaction.atomic():
        # Inserts the new rows and adds exactly those to the hourly rollups.
        inserted = usage_rows_store(rows)
        not_inserted = [(row[0], row[1]) for row in rows if (row[0], row[1]) not in inserted]
        stored = dict(usage_existing_hashes(not_inserted)) if not_inserted else {}
        for row, (index, _, _) in zip(rows, row_meta, strict=True):
            key = (row[0], row[1])
            if key not in inserted:
                _count_resend(result, index, row[1], same=stored.get(key) == row[2])
                continue
            result.accepted += 1
            if row[17] is None:
                result.unpriced += 1
        if post_ingest_hooks_active() and result.accepted:
            ingested = [
                IngestedRecord(row[0], row[3], row[5], row[7], meta[2], row[17])
                for row, meta in zip(rows, row_meta, strict=True)
                if (row[0], row[1]) in inserted
            ]
            chains = tenants.chains
            transaction.on_commit(lambda: post_ingest_hooks_run(ingested, chains))
    if result.unpriced:
        unpriced_models = sorted({row[6] for row in rows if row[17] is None and (row[0], row[1]) in inserted})
        logger.warning(
            "%d unpriced usage records stored (models: %s)", result.unpriced, ", ".join(unpriced_models)
        )
    result.errors.sort(key=lambda error: error["index"])
    return result


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
