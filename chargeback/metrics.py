"""`/metrics`: cost, token, request, latency, ingest and budget metrics in Prometheus' format.

Every figure is read from the database (the hourly rollups) or from Redis when the page is
scraped, by a custom collector, never counted in the process: any web process answers a scrape
with the same numbers, with no multiprocess mode. Labels are bounded: provider, normalised
model, status, token type, ingest source and result, and the *top-level* tenant's slug (never a
user, trace, key or sub-tenant id). Process metrics (memory, GC) are left out on purpose: they
would describe whichever process happened to answer.

Counters are totals over all stored usage, counted by when usage was *ingested* into the
totals: a record that arrives late for an old hour raises the counter when it arrives. For
figures per period, use /api/v1/costs/. A re-rating that lowers a cost lowers the counter,
which Prometheus takes for a counter reset.

Apps above chargeback (budgets, insights) add metric families through one extension point,
`metric_families_register`, called from their AppConfig.ready(), as with chargeback.hooks.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from functools import cache

from django.conf import settings
from django.core.cache import cache as shared_cache
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from chargeback.ingest_counters import INGEST_RESULTS, ingest_counters_read
from chargeback.models import LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKET_FIELDS, UsageRecord, UsageRollupHourly
from tenants.models import Tenant

logger = logging.getLogger(__name__)

NANOS_PER_USD = 10**9
# Token buckets as labels, disjoint so that sum(llm_tokens_total) is every token once: stored
# output includes reasoning, so the output bucket here is the output that is not reasoning.
TOKEN_TYPES = ("uncached_input", "cached_input", "cache_write", "non_reasoning_output", "reasoning_output")
USAGE_LABELS = ["provider", "model", "tenant"]

MetricFamilies = Callable[[], Iterable[Metric]]
_metric_families: list[MetricFamilies] = []


def metric_families_register(provider: MetricFamilies) -> None:
    """Add a function that yields metric families at each scrape (from an AppConfig.ready())."""
    if provider not in _metric_families:
        _metric_families.append(provider)


def top_level_tenant_slugs() -> dict[int, str]:
    """Every tenant id -> the slug of the root of its tree (its organisation)."""
    tenants = {
        tenant_id: (parent_id, slug)
        for tenant_id, parent_id, slug in Tenant.objects.values_list("id", "parent_id", "slug")
    }
    roots: dict[int, str] = {}
    for tenant_id in tenants:
        path, current = [], tenant_id
        while current not in roots:
            path.append(current)
            parent_id, slug = tenants[current]
            # A root; the length check only guards against a cycle (the admin refuses them).
            if parent_id is None or len(path) > len(tenants):
                roots[current] = slug
                break
            current = parent_id
        for member in path:
            roots[member] = roots[current]
    return roots


def usage_metric_families() -> Iterable[Metric]:
    """Cost, tokens, requests, unpriced requests and latency, summed over all rollups."""
    sums = {
        "cost_nanos": Sum("cost_nanos"),
        "requests": Sum("requests"),
        "unpriced_requests": Sum("unpriced_requests"),
        "uncached_input_tokens": Sum("uncached_input_tokens"),
        "cached_input_tokens": Sum("cached_input_tokens"),
        "cache_write_tokens": Sum("cache_write_tokens"),
        "output_tokens": Sum("output_tokens"),
        "reasoning_tokens": Sum("reasoning_tokens"),
        "latency_count": Sum("latency_count"),
        "latency_ms_sum": Sum("latency_ms_sum"),
        **{name: Sum(name) for name in LATENCY_BUCKET_FIELDS},
    }
    rows = (
        UsageRollupHourly.objects.order_by()
        .values("tenant_id", "provider", "model", "status")
        .annotate(**{f"total_{name}": aggregate for name, aggregate in sums.items()})
    )
    roots = top_level_tenant_slugs()
    by_series: dict[tuple[str, str, str], dict[str, int]] = {}
    requests_by_status: dict[tuple[str, str, str, str], int] = {}
    for row in rows:
        labels = (row["provider"], row["model"], roots.get(row["tenant_id"], ""))
        totals = by_series.setdefault(labels, dict.fromkeys(sums, 0))
        for name in sums:
            totals[name] += row[f"total_{name}"] or 0
        status_key = (row["status"], *labels)
        requests_by_status[status_key] = requests_by_status.get(status_key, 0) + (row["total_requests"] or 0)

    cost = CounterMetricFamily(
        "llm_cost_usd_total",
        "Charged cost of LLM usage in USD (markups and discounts applied; unpriced usage counts 0).",
        labels=USAGE_LABELS,
    )
    tokens = CounterMetricFamily(
        "llm_tokens_total",
        "Tokens by disjoint type: uncached_input, cached_input (cache reads), cache_write, "
        "non_reasoning_output, reasoning_output.",
        labels=["token_type", *USAGE_LABELS],
    )
    requests = CounterMetricFamily(
        "llm_requests_total", "LLM calls by status.", labels=["status", *USAGE_LABELS]
    )
    unpriced = CounterMetricFamily(
        "llm_unpriced_requests_total", "LLM calls of models with no known price.", labels=USAGE_LABELS
    )
    duration = HistogramMetricFamily(
        "llm_request_duration_seconds",
        "Latency of LLM calls that reported one, in seconds.",
        labels=USAGE_LABELS,
    )
    for labels, totals in sorted(by_series.items()):
        cost.add_metric(labels, totals["cost_nanos"] / NANOS_PER_USD)
        token_counts = (
            totals["uncached_input_tokens"],
            totals["cached_input_tokens"],
            totals["cache_write_tokens"],
            totals["output_tokens"] - totals["reasoning_tokens"],
            totals["reasoning_tokens"],
        )
        for token_type, count in zip(TOKEN_TYPES, token_counts, strict=True):
            tokens.add_metric([token_type, *labels], count)
        unpriced.add_metric(labels, totals["unpriced_requests"])
        cumulative, buckets = 0, []
        for bound, name in zip(LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKET_FIELDS, strict=False):
            cumulative += totals[name]
            buckets.append((floatToGoString(bound / 1000), cumulative))
        buckets.append(("+Inf", totals["latency_count"]))
        duration.add_metric(labels, buckets, sum_value=totals["latency_ms_sum"] / 1000)
    for labels, count in sorted(requests_by_status.items()):
        requests.add_metric(labels, count)
    return [cost, tokens, requests, unpriced, duration]


def ingest_metric_families() -> Iterable[Metric]:
    family = CounterMetricFamily(
        "llm_ingest_records_total",
        "Usage records that reached ingestion, by source and result (accepted, duplicate, conflict, "
        "rejected). Without Redis only accepted is counted, from the stored records.",
        labels=["source", "result"],
    )
    counts = ingest_counters_read()
    if counts is None:
        counts = {
            (row["source"], "accepted"): row["count"]
            for row in UsageRecord.objects.order_by().values("source").annotate(count=Count("id"))
        }
    for (source, result), count in sorted(counts.items()):
        if result in INGEST_RESULTS:
            family.add_metric([source, result], count)
    return [family]


class ChargebackCollector:
    """Reads every metric family from the database (and Redis) at each scrape."""

    def collect(self) -> Iterable[Metric]:
        yield from usage_metric_families()
        yield from ingest_metric_families()
        for provider in _metric_families:
            try:
                yield from provider()
            except Exception:
                # One failing family must not cost the scrape every other metric.
                logger.exception("metric family %s failed", getattr(provider, "__name__", provider))


@cache
def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ChargebackCollector())
    return registry


def metrics_cache_key(content_type: str) -> str:
    return "metrics:" + ("openmetrics" if content_type.startswith("application/openmetrics") else "text")


def metrics_render(accept_header: str = "") -> tuple[bytes, str]:
    """The exposition (OpenMetrics if the scraper asks for it) and its content type, cached briefly
    in the shared cache so that several scrapers do not each pay for the queries."""
    encoder, content_type = choose_encoder(accept_header)
    seconds = getattr(settings, "METRICS_CACHE_SECONDS", 0)
    key = metrics_cache_key(content_type)
    if seconds:
        body = _cache_call(shared_cache.get, key)
        if body is not None:
            return body, content_type
    body = encoder(metrics_registry())
    if seconds:
        _cache_call(shared_cache.set, key, body, seconds)
    return body, content_type


def _cache_call(method, *args):
    """A shared-cache call that may fail: with the cache (Redis) down, every scrape computes its
    own answer rather than failing."""
    try:
        return method(*args)
    except Exception as error:  # the Redis client's errors, whatever the cache backend raises
        logger.warning("metrics cache unavailable (%s); answering without it", error)
        return None


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape endpoint; with METRICS_TOKEN set, it needs `Authorization: Bearer <token>`."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("A bearer token is required for /metrics.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body, content_type = metrics_render(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
