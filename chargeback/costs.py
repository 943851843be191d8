"""The cost query: usage aggregated by any dimensions and calendar buckets of a time zone.

`/api/v1/costs/`, the dashboard pages and the exports all call `costs_query`, so that every number
they show is the same number.

Where the numbers come from:

* Whole UTC hours come from the hourly rollups when every grouping and tag filter is one the
  rollups carry (tenant, provider, model, status and the `feature` tag).
* Any other tag (`tag.customer`, `tag.prompt_template`, ...) is only in the raw records' `tags`, so
  a query that groups or filters by one reads the raw records for its whole range (bounded to
  MAX_RAW_RANGE).
* Hours that a bucket boundary or the range's start or end cuts in two come from the raw records.
  In zones with whole-hour offsets that is only a start or end that is not on the hour; in zones
  with half- or quarter-hour offsets (Asia/Kolkata, Australia/Adelaide, Asia/Kathmandu, ...) every
  local midnight falls inside a UTC hour, and that hour is split exactly at it from the raw records.

Buckets: `day`, `week` (Monday to Monday) and `month` are calendars of the query's time zone,
DST included; `hour` buckets are UTC hours (local clock hours in every zone with a whole-hour
offset; in a half-hour zone an hour bucket starts at :30 local); `total` is one bucket for the range.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import Count, Q, Sum, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, Trunc

from chargeback import money
from chargeback.calendar import add_months, ceil_hour, floor_hour, local_date, local_midnight
from chargeback.filters import TAG_PARAMETER
from chargeback.models import LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKET_FIELDS, UsageRecord, UsageRollupHourly
from tenants.models import Tenant
from tenants.scoping import visible_tenant_ids
from tenants.selectors import tenant_descendant_ids

GRANULARITIES = ("hour", "day", "week", "month", "total")
GROUP_DIMENSIONS = ("tenant", "provider", "model", "status")
TAG_PREFIX = "tag."
ROLLUP_TAG = "feature"
# Bounds on one query: time buckets, result rows, grouping dimensions, and the range of a query
# that must read raw records throughout (tags other than `feature`).
MAX_BUCKETS = 5000
MAX_ROWS = 5000
MAX_GROUP_DIMENSIONS = 6
MAX_RAW_RANGE = timedelta(days=366)
# Split hours read from the raw records per query: each is one indexed range in an OR, and SQLite
# refuses expressions nested deeper than 1000.
_SPLIT_HOURS_PER_QUERY = 64

# Sums kept per row, in this order. Token, cost and latency fields are the rollup's own names.
SUM_FIELDS = (
    "requests",
    "errors",
    "unpriced_requests",
    "uncached_input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "list_cost_nanos",
    "cost_nanos",
    "latency_count",
    "latency_ms_sum",
    *LATENCY_BUCKET_FIELDS,
)
_LATENCY_FIRST = SUM_FIELDS.index(LATENCY_BUCKET_FIELDS[0])


class CostQueryError(Exception):
    """A cost query that cannot be answered as asked; `code` is stable for API clients."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CostQuery:
    """One cost query, already scoped: `tenant_ids` None means every tenant."""

    start: datetime
    end: datetime
    granularity: str = "day"
    time_zone: str = "UTC"
    group_by: tuple[str, ...] = ()
    tenant_ids: list[int] | None = None
    provider: str = ""
    model: str = ""
    status: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def tag_keys(self) -> set[str]:
        return {name.removeprefix(TAG_PREFIX) for name in self.group_by if name.startswith(TAG_PREFIX)} | set(
            self.tags
        )

    @property
    def needs_raw_records(self) -> bool:
        """Whether a grouping or filter uses a tag that the rollups do not carry."""
        return bool(self.tag_keys - {ROLLUP_TAG})


@dataclass
class CostRow:
    """The sums of one group in one bucket: [period_start, period_end) in the query's zone."""

    period_start: datetime
    period_end: datetime
    group: dict[str, str]
    sums: list[int]

    def value(self, name: str) -> int:
        return self.sums[SUM_FIELDS.index(name)]

    @property
    def latency_buckets(self) -> list[int]:
        return self.sums[_LATENCY_FIRST:]


@dataclass
class CostResult:
    query: CostQuery
    rows: list[CostRow]
    totals: list[int]


# --- building a query for a caller ---------------------------------------------------------------


def time_zone_check(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise CostQueryError("invalid_time_zone", f"{name!r} is not an IANA time zone name.") from error
    return name


def group_by_parse(text: str) -> tuple[str, ...]:
    """`tenant,tag.feature,model` -> ('tenant', 'tag.feature', 'model'), checked and de-duplicated."""
    names: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if not name or name in names:
            continue
        if name not in GROUP_DIMENSIONS and not TAG_PARAMETER.match(name):
            raise CostQueryError(
                "invalid_group_by",
                f"Cannot group by {name!r}: use {', '.join(GROUP_DIMENSIONS)} or tag.<key>.",
            )
        names.append(name)
    if len(names) > MAX_GROUP_DIMENSIONS:
        raise CostQueryError("invalid_group_by", f"Group by at most {MAX_GROUP_DIMENSIONS} dimensions.")
    return tuple(names)


def moment_parse(text: str, time_zone: str, *, name: str) -> datetime:
    """An RFC 3339 date-time, or a date meaning local midnight of that day in the zone."""
    try:
        if len(text) == 10:
            return local_midnight(date.fromisoformat(text), time_zone)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as error:
        raise CostQueryError(
            "validation_error", f"{name}: give an RFC 3339 date-time with an offset, or YYYY-MM-DD."
        ) from error
    if moment.tzinfo is None:
        raise CostQueryError("validation_error", f"{name}: the date-time needs a zone offset (e.g. Z).")
    return moment.astimezone(UTC)


def cost_query_for(
    *,
    principal,
    now: datetime,
    start: str = "",
    end: str = "",
    granularity: str = "day",
    time_zone: str = "",
    group_by: str = "",
    tenant: str = "",
    provider: str = "",
    model: str = "",
    status: str = "",
    tags: dict[str, str] | None = None,
) -> CostQuery:
    """The query a caller asks for, scoped to the tenants the caller may see.

    The zone is `time_zone` if given, else the filtered tenant's, else the key's own tenant's, else
    UTC. Without `start`/`end` the range is the 30 local days up to the end of today.
    """
    if granularity not in GRANULARITIES:
        raise CostQueryError("invalid_granularity", f"granularity is one of {', '.join(GRANULARITIES)}.")
    visible = visible_tenant_ids(principal)
    tenant_ids = visible
    zone_tenant_id = getattr(principal, "tenant_id", None)
    if tenant:
        # As on the usage list: the tenant's subtree, as far as the caller may see it (an ancestor
        # of the key's tenant gives the key's own subtree; any other tenant, nothing).
        root = Tenant.objects.filter(slug=tenant).values_list("id", flat=True).first()
        subtree = tenant_descendant_ids(root) if root is not None else []
        tenant_ids = subtree if visible is None else sorted(set(subtree) & set(visible))
        if root is not None and (visible is None or root in visible):
            zone_tenant_id = root  # never the zone of a tenant the caller cannot see
    if time_zone:
        zone = time_zone_check(time_zone)
    elif zone_tenant_id is not None:
        zone = Tenant.objects.filter(id=zone_tenant_id).values_list("time_zone", flat=True).first() or "UTC"
    else:
        zone = "UTC"
    if start and end:
        range_start, range_end = moment_parse(start, zone, name="start"), moment_parse(end, zone, name="end")
    else:
        range_end = moment_parse(end, zone, name="end") if end else None
        if range_end is None:
            range_end = local_midnight(local_date(now, zone) + timedelta(days=1), zone)
        range_start = (
            moment_parse(start, zone, name="start")
            if start
            else local_midnight(
                local_date(range_end - timedelta(microseconds=1), zone) - timedelta(days=29), zone
            )
        )
    if range_end <= range_start:
        raise CostQueryError("invalid_range", "end must be after start.")
    return CostQuery(
        start=range_start,
        end=range_end,
        granularity=granularity,
        time_zone=zone,
        group_by=group_by_parse(group_by),
        tenant_ids=tenant_ids,
        provider=provider,
        model=model,
        status=status,
        tags=dict(tags or {}),
    )


# --- buckets -------------------------------------------------------------------------------------


def _bucket_start_date(day: date, granularity: str) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def _next_bucket_date(day: date, granularity: str) -> date:
    if granularity == "week":
        return day + timedelta(days=7)
    if granularity == "month":
        return add_months(day, 1)
    return day + timedelta(days=1)


_SHORTEST_BUCKET = {
    "hour": timedelta(hours=1),
    "day": timedelta(hours=23),
    "week": timedelta(days=7) - timedelta(hours=1),
    "month": timedelta(days=28) - timedelta(hours=1),
}


def bucket_boundaries(query: CostQuery) -> list[datetime]:
    """Start of every bucket in the range, then the range's end (UTC); the first is the range's start."""
    shortest = _SHORTEST_BUCKET.get(query.granularity)
    if shortest is not None and (query.end - query.start) / shortest > MAX_BUCKETS + 1:
        raise CostQueryError(
            "too_many_buckets",
            f"The range has more than {MAX_BUCKETS} {query.granularity} buckets: "
            "narrow the range or choose a coarser granularity.",
        )
    boundaries = [query.start]
    if query.granularity == "hour":
        moment = floor_hour(query.start) + timedelta(hours=1)
        while moment < query.end:
            boundaries.append(moment)
            moment += timedelta(hours=1)
    elif query.granularity != "total":
        day = _next_bucket_date(_bucket_start_date(local_date(query.start, query.time_zone), query.granularity),
                                query.granularity)  # fmt: skip
        while (moment := local_midnight(day, query.time_zone)) < query.end:
            if moment > query.start:
                boundaries.append(moment)
            day = _next_bucket_date(day, query.granularity)
    boundaries.append(query.end)
    if len(boundaries) - 1 > MAX_BUCKETS:
        raise CostQueryError("too_many_buckets", f"The range has more than {MAX_BUCKETS} buckets.")
    return boundaries


def _split_hours(boundaries: Sequence[datetime]) -> list[datetime]:
    """UTC hours that a boundary cuts in two (it is not on the hour)."""
    return sorted({floor_hour(moment) for moment in boundaries if moment != floor_hour(moment)})


def _bucket_expression(query: CostQuery, field_name: str):
    if query.granularity == "total":
        return None
    if query.granularity == "hour":
        return Trunc(field_name, "hour", tzinfo=UTC)
    return Trunc(field_name, query.granularity, tzinfo=ZoneInfo(query.time_zone))


def _bucket_key(query: CostQuery, value) -> datetime | date | None:
    """What the database returns for a bucket, as the key `_bucket_range` understands."""
    if value is None:
        return None
    if query.granularity == "hour":
        return value.astimezone(UTC)
    # Local midnight as the zone sees it: the date is what matters (midnight may not exist on a DST day).
    return value.date() if isinstance(value, datetime) else value


def _bucket_range(query: CostQuery, key) -> tuple[datetime, datetime]:
    if key is None:
        return query.start, query.end
    if query.granularity == "hour":
        start, end = key, key + timedelta(hours=1)
    else:
        start = local_midnight(key, query.time_zone)
        end = local_midnight(_next_bucket_date(key, query.granularity), query.time_zone)
    return max(start, query.start), min(end, query.end)


# --- aggregation ---------------------------------------------------------------------------------


# Aggregates are named apart from the model's fields: Django refuses an aggregate that shadows the
# field another aggregate sums.
def _alias(name: str) -> str:
    return f"sum_{name}"


def _rollup_sums() -> dict:
    sums = {_alias(name): Sum(name) for name in SUM_FIELDS if name != "errors"}
    sums[_alias("errors")] = Sum("requests", filter=Q(status="error"))
    return sums


def _raw_sums() -> dict:
    sums = {
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status="error")),
        "unpriced_requests": Count("id", filter=Q(cost_nanos__isnull=True)),
        "latency_count": Count("latency_ms"),
        "latency_ms_sum": Sum("latency_ms"),
    }
    for name in ("uncached_input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                 "reasoning_tokens", "list_cost_nanos", "cost_nanos"):  # fmt: skip
        sums[name] = Sum(name)
    # The same buckets as the rollups: bucket i holds bounds[i-1] < latency <= bounds[i].
    lower = None
    for name, upper in zip(LATENCY_BUCKET_FIELDS, (*LATENCY_BUCKET_BOUNDS_MS, None), strict=True):
        condition = Q(latency_ms__isnull=False)
        if lower is not None:
            condition &= Q(latency_ms__gt=lower)
        if upper is not None:
            condition &= Q(latency_ms__lte=upper)
        sums[name] = Count("id", filter=condition)
        lower = upper
    return {_alias(name): aggregate for name, aggregate in sums.items()}


def _tag_text(key: str):
    # Untagged and empty are one value, "", as in the rollups' `feature` column.
    return Coalesce(KeyTextTransform(key, "tags"), Value(""), output_field=TextField())


def _dimension_columns(query: CostQuery, *, raw: bool) -> tuple[dict, list[str]]:
    """Annotations and value names for the grouping, for rollups or raw records."""
    annotations: dict = {}
    names: list[str] = []
    for index, dimension in enumerate(query.group_by):
        if dimension == "tenant":
            names.append("tenant_id")
        elif dimension == "model":
            names.append("model_id" if raw else "model")
        elif dimension in ("provider", "status"):
            names.append(dimension)
        elif raw:
            alias = f"group_tag_{index}"
            annotations[alias] = _tag_text(dimension.removeprefix(TAG_PREFIX))
            names.append(alias)
        else:
            names.append("feature")
    return annotations, names


def _filtered(queryset, query: CostQuery, *, raw: bool):
    if query.tenant_ids is not None:
        queryset = queryset.filter(tenant_id__in=query.tenant_ids)
    if query.provider:
        queryset = queryset.filter(provider=query.provider)
    if query.model:
        queryset = queryset.filter(**{"model_id" if raw else "model": query.model})
    if query.status:
        queryset = queryset.filter(status=query.status)
    for index, (key, value) in enumerate(sorted(query.tags.items())):
        if raw:
            alias = f"filter_tag_{index}"
            queryset = queryset.annotate(**{alias: _tag_text(key)}).filter(**{alias: value})
        else:
            queryset = queryset.filter(feature=value)
    return queryset


def _grouped(queryset, query: CostQuery, *, raw: bool, time_field: str) -> Iterable[dict]:
    annotations, names = _dimension_columns(query, raw=raw)
    bucket = _bucket_expression(query, time_field)
    if bucket is not None:
        annotations["bucket"] = bucket
        names = ["bucket", *names]
    queryset = queryset.annotate(**annotations) if annotations else queryset
    if not names:
        # No grouping at all: one aggregate row (an empty range gives None sums; skipped below).
        row = queryset.aggregate(**(_raw_sums() if raw else _rollup_sums()))
        return [row] if row.get(_alias("requests")) else []
    # One more than the limit is enough to know the answer is too large.
    return (
        queryset.order_by()
        .values(*names)
        .annotate(**(_raw_sums() if raw else _rollup_sums()))[: MAX_ROWS + 1]
    )


class _Accumulator:
    def __init__(self, query: CostQuery):
        self.query = query
        self.groups: dict[tuple, list[int]] = {}
        _, self.names = _dimension_columns(query, raw=False)
        _, self.raw_names = _dimension_columns(query, raw=True)

    def add(self, rows: Iterable[dict], *, raw: bool) -> None:
        names = self.raw_names if raw else self.names
        for row in rows:
            key = (_bucket_key(self.query, row.get("bucket")), *(row[name] for name in names))
            sums = self.groups.get(key)
            if sums is None:
                if len(self.groups) >= MAX_ROWS:
                    raise _too_many_rows()
                sums = self.groups[key] = [0] * len(SUM_FIELDS)
            for index, name in enumerate(SUM_FIELDS):
                sums[index] += row[_alias(name)] or 0


def _too_many_rows() -> CostQueryError:
    return CostQueryError(
        "too_many_rows",
        f"The answer has more than {MAX_ROWS} rows: narrow the range or filters, group by fewer "
        "dimensions, or choose a coarser granularity.",
    )


def _hour_ranges(
    hours: Sequence[datetime], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Contiguous UTC ranges covering the given hours, clipped to [start, end)."""
    ranges: list[list[datetime]] = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour:
            ranges[-1][1] = hour + timedelta(hours=1)
        else:
            ranges.append([hour, hour + timedelta(hours=1)])
    return [(max(low, start), min(high, end)) for low, high in ranges if max(low, start) < min(high, end)]


def costs_query(query: CostQuery) -> CostResult:
    """Sums of usage for the query: one row per (bucket, group) that has usage, plus totals.

    Rows are ordered by bucket, then by cost (highest first), then by group values. Raises
    CostQueryError (too_many_buckets, too_many_rows, range_too_long) beyond the bounds.
    """
    boundaries = bucket_boundaries(query)
    accumulator = _Accumulator(query)
    if query.tenant_ids == []:
        return CostResult(query=query, rows=[], totals=[0] * len(SUM_FIELDS))
    raw_records = UsageRecord.objects.all()
    if query.needs_raw_records:
        if query.end - query.start > MAX_RAW_RANGE:
            raise CostQueryError(
                "range_too_long",
                f"Grouping or filtering by tags other than '{ROLLUP_TAG}' reads raw records: "
                f"query at most {MAX_RAW_RANGE.days} days at a time.",
            )
        records = _filtered(
            raw_records.filter(occurred_at__gte=query.start, occurred_at__lt=query.end), query, raw=True
        )
        accumulator.add(_grouped(records, query, raw=True, time_field="occurred_at"), raw=True)
    else:
        split = _split_hours(boundaries)
        first_hour, last_hour = ceil_hour(query.start), floor_hour(query.end)
        if first_hour < last_hour:
            rollups = UsageRollupHourly.objects.filter(hour__gte=first_hour, hour__lt=last_hour)
            whole_split = [hour for hour in split if first_hour <= hour < last_hour]
            if whole_split:
                rollups = rollups.exclude(hour__in=whole_split)
            accumulator.add(_grouped(_filtered(rollups, query, raw=False), query, raw=False, time_field="hour"),
                            raw=False)  # fmt: skip
        ranges = _hour_ranges(split, query.start, query.end)
        for offset in range(0, len(ranges), _SPLIT_HOURS_PER_QUERY):
            condition = Q()
            for low, high in ranges[offset : offset + _SPLIT_HOURS_PER_QUERY]:
                condition |= Q(occurred_at__gte=low, occurred_at__lt=high)
            records = _filtered(raw_records.filter(condition), query, raw=True)
            accumulator.add(_grouped(records, query, raw=True, time_field="occurred_at"), raw=True)
    return _result(query, accumulator)


def _result(query: CostQuery, accumulator: _Accumulator) -> CostResult:
    tenant_slugs = {}
    if "tenant" in query.group_by:
        position = query.group_by.index("tenant") + 1
        ids = {key[position] for key in accumulator.groups}
        tenant_slugs = dict(Tenant.objects.filter(id__in=ids).values_list("id", "slug"))
    rows = []
    totals = [0] * len(SUM_FIELDS)
    for key, sums in accumulator.groups.items():
        period_start, period_end = _bucket_range(query, key[0])
        group = {}
        for dimension, value in zip(query.group_by, key[1:], strict=True):
            group[dimension] = tenant_slugs.get(value, str(value)) if dimension == "tenant" else value
        rows.append(CostRow(period_start=period_start, period_end=period_end, group=group, sums=sums))
        for index, value in enumerate(sums):
            totals[index] += value
    cost = SUM_FIELDS.index("cost_nanos")
    rows.sort(key=lambda row: (row.period_start, -row.sums[cost], tuple(row.group.values())))
    return CostResult(query=query, rows=rows, totals=totals)


# --- presenting ----------------------------------------------------------------------------------


def latency_quantile_ms(buckets: Sequence[int], quantile: float) -> float | None:
    """The quantile of a latency histogram (counts per LATENCY_BUCKET_BOUNDS_MS bucket), by linear
    interpolation inside the bucket that holds it, as Prometheus' histogram_quantile does; a quantile
    in the open last bucket is its lower bound. None without latencies."""
    total = sum(buckets)
    if not total:
        return None
    rank = quantile * total
    cumulative = 0
    for index, count in enumerate(buckets):
        if count and cumulative + count >= rank:
            if index == len(LATENCY_BUCKET_BOUNDS_MS):
                return float(LATENCY_BUCKET_BOUNDS_MS[-1])
            lower = LATENCY_BUCKET_BOUNDS_MS[index - 1] if index else 0
            upper = LATENCY_BUCKET_BOUNDS_MS[index]
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return float(LATENCY_BUCKET_BOUNDS_MS[-1])  # pragma: no cover - rank <= total always lands above


def cost_metrics(sums: Sequence[int]) -> dict:
    """The figures of one row (or of the totals), as the API shows them: money as decimal strings."""
    value = dict(zip(SUM_FIELDS, sums, strict=True))
    input_tokens = value["uncached_input_tokens"] + value["cached_input_tokens"] + value["cache_write_tokens"]
    total_tokens = input_tokens + value["output_tokens"]
    requests = value["requests"]
    buckets = list(sums[_LATENCY_FIRST:])
    p50, p95 = latency_quantile_ms(buckets, 0.5), latency_quantile_ms(buckets, 0.95)
    return {
        "cost_usd": money.nanos_to_str(value["cost_nanos"]),
        "list_cost_usd": money.nanos_to_str(value["list_cost_nanos"]),
        "requests": requests,
        "errors": value["errors"],
        "error_rate": round(value["errors"] / requests, 6) if requests else None,
        "unpriced_requests": value["unpriced_requests"],
        "uncached_input_tokens": value["uncached_input_tokens"],
        "cached_input_tokens": value["cached_input_tokens"],
        "cache_write_tokens": value["cache_write_tokens"],
        "input_tokens": input_tokens,
        "output_tokens": value["output_tokens"],
        "reasoning_tokens": value["reasoning_tokens"],
        "total_tokens": total_tokens,
        # Exact to the nano: cost x 1000 / tokens, rounded half-even once.
        "cost_per_1k_tokens_usd": (
            money.nanos_to_str(money.divide_half_even(value["cost_nanos"] * 1000, total_tokens))
            if total_tokens
            else None
        ),
        "latency_average_ms": (
            round(value["latency_ms_sum"] / value["latency_count"], 1) if value["latency_count"] else None
        ),
        "latency_p50_ms": None if p50 is None else round(p50, 1),
        "latency_p95_ms": None if p95 is None else round(p95, 1),
    }


def cost_result_as_dict(result: CostResult) -> dict:
    """The whole answer, as `/api/v1/costs/` returns it."""
    query = result.query
    zone = ZoneInfo(query.time_zone)
    return {
        "start": query.start.astimezone(zone).isoformat(),
        "end": query.end.astimezone(zone).isoformat(),
        "granularity": query.granularity,
        "time_zone": query.time_zone,
        "group_by": list(query.group_by),
        "source": "raw_records" if query.needs_raw_records else "rollups",
        "totals": cost_metrics(result.totals),
        "rows": [
            {
                "period_start": row.period_start.astimezone(zone).isoformat(),
                "period_end": row.period_end.astimezone(zone).isoformat(),
                "group": row.group,
                **cost_metrics(row.sums),
            }
            for row in result.rows
        ],
    }
