"""Reads for the pages, all scoped to what the signed-in person may see.

Every cost figure comes from `chargeback.costs` (the selector behind `/api/v1/costs/`), through
`page_cost_query` and `page_costs` below, so a page and the API never disagree; the costs selector
reads the hourly rollups (and raw records only where a tag or a split hour needs them). The number
of queries of a page depends on its filters and on how many budgets are visible, never on how many
usage records there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.paginator import Paginator
from django.db.models import TextField, Value
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Coalesce
from django.urls import reverse

from budgets.selectors import budget_list, budget_status
from chargeback import money
from chargeback.costs import (
    SUM_FIELDS,
    CostQuery,
    CostQueryError,
    CostResult,
    bucket_boundaries,
    cost_metrics,
    cost_query_for,
    costs_query,
)
from chargeback.models import UsageRecord, UsageRollupHourly
from chargeback.selectors import statement_list
from dashboards import charts, formatting
from dashboards.filters import FEATURE_TAG, PROMPT_TEMPLATE_TAG, PageFilters
from insights.selectors import anomaly_list
from insights.services import anomaly_summary_line
from tenants.models import Tenant
from tenants.selectors import tenant_ancestor_ids

# Series in a stacked chart beyond this many are summed into "Other".
MAX_STACKED_SERIES = 7
# Rows of a "top" table on the overview.
TOP_ROWS = 8
# Rows of a drill-down table: enough to be useful, bounded so that a page stays a page.
BREAKDOWN_ROWS = 50
RECORDS_PER_PAGE = 50
STATEMENTS_PER_PAGE = 50
# Distinct (provider, model, feature) combinations offered in the filter bar's choices.
MAX_FILTER_CHOICES = 500
UNTAGGED_LABEL = "(untagged)"

DIMENSION_TITLES = {
    "tenant": "Tenant",
    "provider": "Provider",
    "model": "Model",
    "status": "Status",
    "tag.feature": "Feature",
    "tag.prompt_template": "Prompt template",
}


def dimension_title(dimension: str) -> str:
    return DIMENSION_TITLES.get(dimension, dimension.removeprefix("tag.").replace("_", " ").capitalize())


# --- the adapter to the costs selector -------------------------------------------------------------


def automatic_granularity(length: timedelta) -> str:
    """Buckets for a range when the person did not choose: about 2 to 90 bars on a chart."""
    if length <= timedelta(days=2):
        return "hour"
    if length <= timedelta(days=92):
        return "day"
    if length <= timedelta(days=731):
        return "week"
    return "month"


def page_cost_query(*, principal, filters: PageFilters, now: datetime) -> CostQuery:
    """The cost query of a page's filters, built and scoped exactly as `/api/v1/costs/` builds it.

    Raises chargeback.costs.CostQueryError for a range or zone that cannot be answered.
    """
    query = cost_query_for(
        principal=principal,
        now=now,
        start=filters.start,
        end=filters.end,
        granularity=filters.granularity or "day",
        tenant=filters.tenant,
        provider=filters.provider,
        model=filters.model,
        status=filters.status,
        tags=filters.tags,
    )
    if not filters.granularity:
        query = replace(query, granularity=automatic_granularity(query.end - query.start))
    return query


def page_costs(query: CostQuery, **changes) -> CostResult:
    """The costs selector's answer for `query` with `changes` (e.g. another grouping or range)."""
    return costs_query(replace(query, **changes) if changes else query)


def previous_range(query: CostQuery) -> tuple[datetime, datetime]:
    """The range of the same length just before the query's, for "change vs previous period"."""
    return query.start - (query.end - query.start), query.start


# --- time buckets --------------------------------------------------------------------------------


def _bucket_labels(moment: datetime, granularity: str, zone: ZoneInfo) -> charts.Bucket:
    local = moment.astimezone(zone)
    if granularity == "hour":
        return charts.Bucket(f"{local:%H:%M}", f"{local:%a %-d %b %Y %H:%M %Z}")
    if granularity == "week":
        return charts.Bucket(f"{local:%-d %b}", f"Week of {local:%a %-d %b %Y}")
    if granularity == "month":
        return charts.Bucket(f"{local:%b %Y}", f"{local:%B %Y}")
    return charts.Bucket(f"{local:%-d %b}", f"{local:%a %-d %b %Y}")


def time_buckets(query: CostQuery) -> list[tuple[datetime, charts.Bucket]]:
    """Every bucket of the range, with or without usage, as (start, labels)."""
    zone = ZoneInfo(query.time_zone)
    return [
        (start, _bucket_labels(start, query.granularity, zone)) for start in bucket_boundaries(query)[:-1]
    ]


# --- figures ---------------------------------------------------------------------------------------


def _value(sums: list[int], name: str) -> int:
    return sums[SUM_FIELDS.index(name)]


def figures(sums: list[int]) -> dict:
    """The API's figures of a row (cost_metrics) plus exact nanos and shares the pages need."""
    metrics = cost_metrics(sums)
    input_tokens = metrics["input_tokens"]
    return {
        **metrics,
        "cost_nanos": _value(sums, "cost_nanos"),
        "cost_per_1k_tokens_nanos": (
            money.divide_half_even(_value(sums, "cost_nanos") * 1000, metrics["total_tokens"])
            if metrics["total_tokens"]
            else None
        ),
        "error_percent": metrics["errors"] * 100 / metrics["requests"] if metrics["requests"] else None,
        "cached_percent": metrics["cached_input_tokens"] * 100 / input_tokens if input_tokens else None,
    }


@dataclass
class KeyFigure:
    label: str
    value: str
    detail: str = ""
    change: dict | None = None
    previous: str = ""
    # Only a change in cost is coloured as good or bad; more requests is neither.
    colour_change: bool = False


def key_figures(current: dict, previous: dict) -> list[KeyFigure]:
    """The row of headline numbers at the top of a page."""
    return [
        KeyFigure(
            "Total cost",
            formatting.usd(current["cost_nanos"]),
            change=formatting.change(current["cost_nanos"], previous["cost_nanos"]),
            previous=formatting.usd(previous["cost_nanos"]),
            colour_change=True,
        ),
        KeyFigure(
            "Requests",
            formatting.count(current["requests"]),
            change=formatting.change(current["requests"], previous["requests"]),
            previous=formatting.count(previous["requests"]),
        ),
        KeyFigure(
            "Cost per 1K tokens",
            formatting.usd(current["cost_per_1k_tokens_nanos"]),
            f"{formatting.count(current['total_tokens'])} tokens",
        ),
        KeyFigure(
            "Latency p50 / p95",
            f"{formatting.milliseconds(current['latency_p50_ms'])} / {formatting.milliseconds(current['latency_p95_ms'])}",
            "interpolated in the latency histogram",
        ),
        KeyFigure(
            "Error rate",
            formatting.percent(current["error_percent"], digits=2),
            f"{formatting.count(current['errors'])} failed requests",
        ),
        KeyFigure(
            "Cached input share",
            formatting.percent(current["cached_percent"]),
            f"{formatting.count(current['cached_input_tokens'])} cache-read tokens",
        ),
        KeyFigure(
            "Unpriced requests",
            formatting.count(current["unpriced_requests"]),
            "no known price: counted, not charged"
            if current["unpriced_requests"]
            else "every request priced",
        ),
    ]


# --- charts over time ------------------------------------------------------------------------------


@dataclass
class CostTrends:
    """The charts of a page and the totals they add up to."""

    current: dict
    previous: dict
    figures: list[KeyFigure]
    charts: list[charts.Chart]
    stack_error: str = ""


def _series_label(dimension: str, value: str) -> str:
    if dimension.startswith("tag.") and value == "":
        return UNTAGGED_LABEL
    return value


def _stacked_cost_chart(query: CostQuery, stack: str, buckets) -> charts.Chart:
    result = page_costs(query, group_by=(stack,))
    positions = {start: index for index, (start, _) in enumerate(buckets)}
    by_series: dict[str, list[int]] = {}
    for row in result.rows:
        name = _series_label(stack, row.group[stack])
        values = by_series.setdefault(name, [0] * len(buckets))
        values[positions[row.period_start]] += row.value("cost_nanos")
    ranked = sorted(by_series.items(), key=lambda item: (-sum(item[1]), item[0]))
    shown = ranked[:MAX_STACKED_SERIES]
    rest = ranked[MAX_STACKED_SERIES:]
    if rest:
        shown.append(("Other", [sum(values[index] for _, values in rest) for index in range(len(buckets))]))
    title = dimension_title(stack).lower()
    return charts.stacked_bar_chart(
        chart_id="cost-over-time",
        title=f"Cost per {query.granularity}, by {title}",
        description=(
            f"Stacked bars of charged cost in US dollars per {query.granularity} ({query.time_zone}), "
            f"one segment per {title}; the {MAX_STACKED_SERIES} largest are shown, the rest as Other."
        ),
        y_label="Cost (USD)",
        x_label=f"{query.granularity.capitalize()} ({query.time_zone})",
        buckets=[labels for _, labels in buckets],
        series=shown,
        value_format=formatting.usd,
        axis_format=lambda nanos: formatting.usd_axis(nanos / money.NANOS_PER_USD),
    )


def cost_trends(query: CostQuery, *, stack: str) -> CostTrends:
    """Cost stacked by `stack`, volume and errors, cost per 1K tokens, latency and cache share per
    bucket, and the totals of this and the previous period: four cost queries."""
    buckets = time_buckets(query)
    positions = {start: index for index, (start, _) in enumerate(buckets)}
    labels = [labels for _, labels in buckets]
    per_bucket = [[0] * len(SUM_FIELDS) for _ in buckets]
    errors = [0] * len(buckets)
    for row in page_costs(query, group_by=("status",)).rows:
        sums = per_bucket[positions[row.period_start]]
        for index, value in enumerate(row.sums):
            sums[index] += value
        if row.group["status"] == "error":
            errors[positions[row.period_start]] += row.value("requests")
    current = figures(_sums_of_lists(per_bucket))
    previous_start, previous_end = previous_range(query)
    previous = figures(page_costs(query, start=previous_start, end=previous_end, granularity="total").totals)
    bucket_figures = [figures(sums) for sums in per_bucket]
    unit = query.granularity
    zone_label = f"{unit.capitalize()} ({query.time_zone})"

    stack_error = ""
    try:
        stacked = _stacked_cost_chart(query, stack, buckets)
    except CostQueryError as error:
        # Too many rows (say, hundreds of tenants by day): the other charts still help.
        stacked, stack_error = None, error.message

    requests_ok = [item["requests"] - failed for item, failed in zip(bucket_figures, errors, strict=True)]
    volume = charts.stacked_bar_chart(
        chart_id="requests-over-time",
        title=f"Requests and errors per {unit}",
        description=f"Stacked bars of successful and failed requests per {unit}; the error rate is in each tooltip.",
        y_label="Requests",
        x_label=zone_label,
        buckets=labels,
        series=[("Succeeded", requests_ok), ("Failed", errors)],
        value_format=formatting.count,
        axis_format=formatting.short_count,
        colors=[charts.PALETTE[0], charts.ERROR_COLOR],
        tooltip_notes=[
            [""] * len(labels),
            [
                f" ({formatting.percent(item['error_percent'], digits=2)} of requests)"
                for item in bucket_figures
            ],
        ],
    )
    # The error rate per bucket, beside the counts, in the chart's data table.
    volume.table_headers.append("Error rate")
    for row, item in zip(volume.table_rows, bucket_figures, strict=True):
        row.append(formatting.percent(item["error_percent"], digits=2))
    unit_cost = charts.line_chart(
        chart_id="cost-per-1k-tokens",
        title=f"Cost per 1K tokens per {unit}",
        description="Charged cost divided by all tokens (input and output), per thousand tokens, in US dollars.",
        y_label="USD per 1K tokens",
        x_label=zone_label,
        buckets=labels,
        series=[
            ("Cost per 1K tokens", [_usd_float(item["cost_per_1k_tokens_nanos"]) for item in bucket_figures])
        ],
        value_format=lambda value: formatting.usd(round(value * money.NANOS_PER_USD)),
        axis_format=formatting.usd_axis,
    )
    latency = charts.line_chart(
        chart_id="latency",
        title=f"Latency p50 and p95 per {unit}",
        description="Median and 95th percentile request latency in milliseconds, from the latency histogram.",
        y_label="Latency (ms)",
        x_label=zone_label,
        buckets=labels,
        series=[
            ("p50", [item["latency_p50_ms"] for item in bucket_figures]),
            ("p95", [item["latency_p95_ms"] for item in bucket_figures]),
        ],
        value_format=formatting.milliseconds,
        axis_format=formatting.short_count,
        colors=[charts.PALETTE[0], charts.PALETTE[5]],
        dashed=[False, True],
    )
    cache_share = charts.line_chart(
        chart_id="cached-share",
        title=f"Cached share of input tokens per {unit}",
        description="Cache-read tokens as a percentage of all input tokens.",
        y_label="Cached input (%)",
        x_label=zone_label,
        buckets=labels,
        series=[("Cached input share", [item["cached_percent"] for item in bucket_figures])],
        value_format=lambda value: formatting.percent(value),
        axis_format=lambda value: f"{value:g}%",
        colors=[charts.PALETTE[2]],
    )
    return CostTrends(
        current=current,
        previous=previous,
        figures=key_figures(current, previous),
        charts=[chart for chart in (stacked, volume, unit_cost, latency, cache_share) if chart is not None],
        stack_error=stack_error,
    )


def _sums_of_lists(lists: list[list[int]]) -> list[int]:
    return [sum(values) for values in zip(*lists, strict=True)] if lists else [0] * len(SUM_FIELDS)


def _usd_float(nanos: int | None) -> float | None:
    # Pixel positions only; every figure shown is formatted from the exact nanos.
    return None if nanos is None else nanos / money.NANOS_PER_USD


# --- tables: top and drill-down --------------------------------------------------------------------


@dataclass
class BreakdownRow:
    label: str
    link: str
    cost_nanos: int
    previous_cost_nanos: int
    requests: int
    total_tokens: int
    share_percent: float
    change: dict
    cost_per_1k_tokens: str
    error_percent: float | None
    note: str = ""

    @property
    def share_bar_width(self) -> float:
        """Pixels of the little share bar beside the percentage (50 px is the whole)."""
        return self.share_percent / 2


@dataclass
class Breakdown:
    dimension: str
    title: str
    rows: list[BreakdownRow]
    more_rows: int = 0
    csv_parameters: str = ""

    @property
    def heading(self) -> str:
        return dimension_title(self.dimension)


def _grouped_totals(query: CostQuery, dimension: str, *, start=None, end=None) -> dict[str, list[int]]:
    changes = {"group_by": (dimension,), "granularity": "total"}
    if start is not None:
        changes.update(start=start, end=end)
    return {row.group[dimension]: row.sums for row in page_costs(query, **changes).rows}


def breakdown(
    query: CostQuery,
    dimension: str,
    *,
    title: str,
    link_for,
    limit: int,
    fold=None,
    label_for=None,
    filters: PageFilters,
) -> Breakdown:
    """Cost by `dimension` in the range and the previous one (two cost queries), largest first.

    `fold` maps a group value to the row it counts in (e.g. a tenant to the child subtree it is
    in; None drops it), `label_for` names a row and `link_for` gives its link ("" for none).
    """
    previous_start, previous_end = previous_range(query)
    current = _grouped_totals(query, dimension)
    previous = _grouped_totals(query, dimension, start=previous_start, end=previous_end)
    folded_current: dict[str, list[int]] = {}
    folded_previous: dict[str, int] = {}
    for source, target in ((current, folded_current), (previous, None)):
        for value, sums in source.items():
            key = fold(value) if fold else value
            if key is None:
                continue
            if target is None:
                folded_previous[key] = folded_previous.get(key, 0) + _value(sums, "cost_nanos")
            else:
                existing = target.setdefault(key, [0] * len(SUM_FIELDS))
                for index, number in enumerate(sums):
                    existing[index] += number
    total_cost = sum(_value(sums, "cost_nanos") for sums in folded_current.values())
    rows = []
    for key, sums in folded_current.items():
        item = figures(sums)
        previous_cost = folded_previous.get(key, 0)
        rows.append(
            BreakdownRow(
                label=label_for(key) if label_for else _series_label(dimension, key),
                link=link_for(key),
                cost_nanos=item["cost_nanos"],
                previous_cost_nanos=previous_cost,
                requests=item["requests"],
                total_tokens=item["total_tokens"],
                share_percent=item["cost_nanos"] * 100 / total_cost if total_cost else 0.0,
                change=formatting.change(item["cost_nanos"], previous_cost),
                cost_per_1k_tokens=formatting.usd(item["cost_per_1k_tokens_nanos"]),
                error_percent=item["error_percent"],
            )
        )
    rows.sort(key=lambda row: (-row.cost_nanos, -row.requests, row.label))
    return Breakdown(
        dimension=dimension,
        title=title,
        rows=rows[:limit],
        more_rows=max(len(rows) - limit, 0),
        csv_parameters=filters.api_parameters(granularity="total", group_by=(dimension,)),
    )


def top_breakdowns(query: CostQuery, *, filters: PageFilters, path: str) -> list[Breakdown]:
    """The overview's top tenants (linked to their drill-down), features and models (linked to the
    overview narrowed to them), each with the change from the previous period."""
    return [
        breakdown(
            query,
            "tenant",
            title="Top tenants (own usage)",
            link_for=lambda slug: (
                reverse("dashboards:tenant", args=[slug]) + filters.query_string(tenant="", page=1)
            ),
            limit=TOP_ROWS,
            filters=filters,
        ),
        breakdown(
            query,
            "tag.feature",
            title="Top features",
            link_for=lambda value: path + filters.with_tag(FEATURE_TAG, value).query_string(),
            limit=TOP_ROWS,
            filters=filters,
        ),
        breakdown(
            query,
            "model",
            title="Top models",
            link_for=lambda value: path + filters.with_changes(model=value, page=1).query_string(),
            limit=TOP_ROWS,
            filters=filters,
        ),
    ]


# --- tenants ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantNode:
    id: int
    slug: str
    name: str
    parent_id: int | None
    kind: str
    time_zone: str


def visible_tenants(*, principal) -> dict[int, TenantNode]:
    """Every tenant the person may see, in one query, by id."""
    return {
        row["id"]: TenantNode(**row)
        for row in Tenant.objects.visible_to(principal)
        .order_by("slug")
        .values("id", "slug", "name", "parent_id", "kind", "time_zone")
    }


def tenant_visible_get(*, principal, slug: str) -> TenantNode | None:
    row = (
        Tenant.objects.visible_to(principal)
        .filter(slug=slug)
        .values("id", "slug", "name", "parent_id", "kind", "time_zone")
        .first()
    )
    return TenantNode(**row) if row else None


def _child_in_path(tenant_id: int, root_id: int | None, tenants: dict[int, TenantNode]) -> int | None:
    """The tenant right below `root_id` on the way up from `tenant_id` (the root of the visible
    forest the tenant is in when `root_id` is None); None when the tenant is not below the root."""
    current = tenants.get(tenant_id)
    while current is not None:
        parent = tenants.get(current.parent_id) if current.parent_id is not None else None
        if root_id is None and parent is None:
            return current.id
        if current.parent_id == root_id:
            return current.id
        current = parent
    return None


def tenant_breakdown(
    query: CostQuery, *, root: TenantNode | None, tenants: dict[int, TenantNode], filters: PageFilters
) -> Breakdown:
    """Cost of each child subtree of `root` (of each visible top-level tenant without a root),
    with the root's own usage as a row of its own."""
    by_slug = {node.slug: node for node in tenants.values()}
    own = f"{root.slug}\x00own" if root else None

    def fold(slug: str) -> str | None:
        node = by_slug.get(slug)
        if node is None:
            return None
        if root is not None and node.id == root.id:
            return own
        child = _child_in_path(node.id, root.id if root else None, tenants)
        return tenants[child].slug if child is not None else None

    def label_for(key: str) -> str:
        if key == own:
            return f"{root.name} (own usage)"
        return f"{by_slug[key].name} ({key})"

    def link_for(key: str) -> str:
        slug = root.slug if key == own else key
        return reverse("dashboards:tenant", args=[slug]) + filters.query_string(tenant="", page=1)

    result = breakdown(
        query,
        "tenant",
        title="Child tenants" if root else "Tenants",
        link_for=link_for,
        limit=BREAKDOWN_ROWS,
        fold=fold,
        label_for=label_for,
        filters=filters,
    )
    for row in result.rows:
        if row.label.endswith("(own usage)"):
            row.note = "usage reported on this tenant itself"
    return result


def tenant_breadcrumbs(
    tenant: TenantNode, tenants: dict[int, TenantNode], filters: PageFilters
) -> list[dict]:
    """The visible ancestors of the tenant, root first, each linked to its drill-down."""
    chain = [tenant_id for tenant_id in reversed(tenant_ancestor_ids(tenant.id)) if tenant_id in tenants]
    query_string = filters.without_drill_steps().query_string()
    return [
        {
            "label": tenants[tenant_id].name,
            "link": reverse("dashboards:tenant", args=[tenants[tenant_id].slug]) + query_string,
        }
        for tenant_id in chain
        if tenant_id != tenant.id
    ]


# --- drill-down ------------------------------------------------------------------------------------


@dataclass
class DrillStep:
    """One level below the tenant in the breadcrumb: feature, model or prompt template."""

    label: str
    link: str


def drill_next_dimension(filters: PageFilters) -> str | None:
    """What the drill-down lists next: feature, then model, then prompt template, then records."""
    if FEATURE_TAG not in filters.tags:
        return f"tag.{FEATURE_TAG}"
    if not filters.model:
        return "model"
    if PROMPT_TEMPLATE_TAG not in filters.tags:
        return f"tag.{PROMPT_TEMPLATE_TAG}"
    return None


def drill_steps(path: str, filters: PageFilters) -> list[DrillStep]:
    """Breadcrumb steps below the tenant, each linking to the view of that step."""
    steps = []
    base = filters.without_drill_steps()
    if FEATURE_TAG in filters.tags:
        feature = filters.tags[FEATURE_TAG]
        base = base.with_tag(FEATURE_TAG, feature)
        steps.append(DrillStep(f"Feature: {feature or UNTAGGED_LABEL}", path + base.query_string()))
    if filters.model:
        base = base.with_changes(model=filters.model)
        steps.append(DrillStep(f"Model: {filters.model}", path + base.query_string()))
    if PROMPT_TEMPLATE_TAG in filters.tags:
        template = filters.tags[PROMPT_TEMPLATE_TAG]
        base = base.with_tag(PROMPT_TEMPLATE_TAG, template)
        steps.append(DrillStep(f"Prompt template: {template or UNTAGGED_LABEL}", path + base.query_string()))
    return steps


def drill_breakdown(query: CostQuery, dimension: str, *, path: str, filters: PageFilters) -> Breakdown:
    # The path names the tenant; the query string carries the rest.
    link_filters = filters.with_changes(tenant="", page=1)

    def link_for(value: str) -> str:
        if dimension == "model":
            return path + link_filters.with_changes(model=value).query_string()
        return path + link_filters.with_tag(dimension.removeprefix("tag."), value).query_string()

    titles = {"tag.feature": "Features", "model": "Models", "tag.prompt_template": "Prompt templates"}
    return breakdown(
        query, dimension, title=titles[dimension], link_for=link_for, limit=BREAKDOWN_ROWS, filters=filters
    )


def usage_record_page(query: CostQuery, *, page: int):
    """The raw records of the query's range and filters, newest first, one page (two queries)."""
    records = UsageRecord.objects.filter(occurred_at__gte=query.start, occurred_at__lt=query.end)
    if query.tenant_ids is not None:
        records = records.filter(tenant_id__in=query.tenant_ids)
    if query.provider:
        records = records.filter(provider=query.provider)
    if query.model:
        records = records.filter(model_id=query.model)
    if query.status:
        records = records.filter(status=query.status)
    for index, (key, value) in enumerate(sorted(query.tags.items())):
        alias = f"page_tag_{index}"
        # Untagged and empty are one value, as in the costs selector.
        if value:
            # KeyTransform compares as JSON, so the value is encoded as a JSON string on every database.
            records = records.annotate(**{alias: KeyTransform(key, "tags")}).filter(**{alias: value})
        else:
            untagged = Coalesce(KeyTextTransform(key, "tags"), Value(""), output_field=TextField())
            records = records.annotate(**{alias: untagged}).filter(**{alias: ""})
    records = records.select_related("tenant").order_by("-occurred_at", "-id")
    paginator = Paginator(records, RECORDS_PER_PAGE)
    return paginator.get_page(page)


# --- filter bar choices ----------------------------------------------------------------------------


@dataclass
class FilterChoices:
    tenants: list[TenantNode] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)


def filter_choices(query: CostQuery, tenants: dict[int, TenantNode]) -> FilterChoices:
    """What the filter bar offers: the visible tenants and the providers, models and features that
    have usage in the range (one query on the rollups)."""
    rollups = UsageRollupHourly.objects.filter(hour__gte=query.start - timedelta(hours=1), hour__lt=query.end)
    if query.tenant_ids is not None:
        rollups = rollups.filter(tenant_id__in=query.tenant_ids)
    combinations = list(
        rollups.order_by().values_list("provider", "model", "feature").distinct()[:MAX_FILTER_CHOICES]
    )
    return FilterChoices(
        tenants=sorted(tenants.values(), key=lambda node: node.slug),
        providers=sorted({provider for provider, _, _ in combinations}),
        models=sorted({model for _, model, _ in combinations}),
        features=sorted({feature for _, _, feature in combinations if feature}),
    )


# --- budgets ---------------------------------------------------------------------------------------


@dataclass
class BudgetView:
    status: dict
    name: str
    tenant_slug: str
    tenant_name: str
    period_label: str
    period_end: datetime
    time_zone: str
    amount: str
    spent: str
    remaining: str
    forecast: str
    percent_used: float
    forecast_percent: float | None
    # Percent of the bar's width: the bar's scale is at least 100 % of the budget.
    scale_percent: float
    aria_max: float
    limit_position: float
    spent_width: float
    forecast_position: float | None
    thresholds: list[dict]
    state: str  # "ok", "warning" (a threshold crossed) or "over"
    action: str
    narrowing: str


def _budget_view(status: dict) -> BudgetView:
    budget = status["budget"]
    period = status["period"]
    zone = ZoneInfo(budget.tenant.time_zone)
    percent_used = float(status["percent_used"])
    forecast = status["forecast_nanos"]
    forecast_percent = forecast * 100 / budget.amount_nanos if forecast is not None else None
    scale = max(100.0, percent_used, forecast_percent or 0.0)
    thresholds = []
    crossed = False
    for item in status["thresholds"]:
        threshold = item["threshold"]
        reached = status["spent_nanos"] >= item["limit_nanos"]
        crossed = crossed or (reached and threshold.on_actual)
        thresholds.append(
            {
                "percent": float(threshold.percent),
                "position": float(threshold.percent) * 100 / scale,
                "limit": formatting.usd(item["limit_nanos"]),
                "reached": reached,
                "alerted": item["alerted_actual"] or item["alerted_forecast"],
                "kinds": " and ".join(
                    kind
                    for kind, on in (("actual", threshold.on_actual), ("forecast", threshold.on_forecast))
                    if on
                ),
            }
        )
    narrowing = ", ".join(
        part
        for part in (
            f"provider {budget.provider}" if budget.provider else "",
            f"model {budget.model}" if budget.model else "",
            f"{budget.tag_key}={budget.tag_value}" if budget.tag_key else "",
        )
        if part
    )
    last_day = (period.end - timedelta(microseconds=1)).astimezone(zone)
    return BudgetView(
        status=status,
        name=budget.name,
        tenant_slug=budget.tenant.slug,
        tenant_name=budget.tenant.name,
        period_label=f"{budget.get_period_display()} {period.start.astimezone(zone):%-d %b %Y} to {last_day:%-d %b %Y}",
        period_end=period.end,
        time_zone=budget.tenant.time_zone,
        amount=formatting.usd(budget.amount_nanos),
        spent=formatting.usd(status["spent_nanos"]),
        remaining=formatting.usd(status["remaining_nanos"]),
        forecast=formatting.usd(forecast) if forecast is not None else "too early to tell",
        percent_used=percent_used,
        forecast_percent=forecast_percent,
        scale_percent=scale,
        aria_max=max(100.0, percent_used),
        limit_position=100 * 100 / scale,
        spent_width=min(percent_used, scale) * 100 / scale,
        forecast_position=forecast_percent * 100 / scale if forecast_percent is not None else None,
        thresholds=thresholds,
        state="over" if percent_used >= 100 else "warning" if crossed else "ok",
        action=budget.get_action_display(),
        narrowing=narrowing,
    )


def budget_views(*, principal, now: datetime, tenant_ids: list[int] | None = None) -> list[BudgetView]:
    """The active budgets the person may see (within `tenant_ids` when given), fullest first.

    A few queries per budget (its spend and its alerts): bounded by the number of budgets.
    """
    budgets = budget_list(principal=principal).filter(is_active=True)
    if tenant_ids is not None:
        budgets = budgets.filter(tenant_id__in=tenant_ids)
    views = [_budget_view(budget_status(budget, now)) for budget in budgets]
    views.sort(key=lambda view: (-view.percent_used, view.tenant_slug, view.name))
    return views


# --- anomalies ------------------------------------------------------------------------------------


def anomaly_summaries(*, principal, start: datetime, end: datetime, limit: int = 10) -> list[dict]:
    """The largest cost anomalies that started in [start, end) among the tenants the person may
    see, newest first: when, tenant, the one-line summary the notifications use, and the top root
    cause with its dollar share."""
    anomalies = (
        anomaly_list(principal=principal)
        .filter(started_at__gte=start, started_at__lt=end)
        .select_related("tenant")
        .order_by("-started_at", "-pk")[:limit]
    )
    summaries = []
    for anomaly in anomalies:
        cause = anomaly.root_causes[0] if anomaly.root_causes else None
        summaries.append(
            {
                "when": anomaly.started_at,
                "tenant": anomaly.tenant.slug,
                "status": anomaly.get_status_display(),
                "summary": anomaly_summary_line(anomaly),
                "description": (
                    f"Top cause: {cause['dimension']} {cause['value'] or '(untagged)'}, "
                    f"{formatting.usd(cause['impact_nanos'])} of the impact"
                    if cause
                    else ""
                ),
            }
        )
    return summaries


# --- statements ------------------------------------------------------------------------------------


def statement_page(*, principal, page: int, status: str = ""):
    """Statements the person may see, newest month first, one page."""
    statements = (
        statement_list(principal=principal).defer("pdf").order_by("-period_start", "tenant__slug", "-id")
    )
    if status:
        statements = statements.filter(status=status)
    return Paginator(statements, STATEMENTS_PER_PAGE).get_page(page)


def statement_visible_get(*, principal, statement_id: int):
    return statement_list(principal=principal).filter(pk=statement_id).first()
