"""Monthly statements for many tenants, as a ratio against one GROUP BY over the same records.

What it measures (all on PostgreSQL, in one run, on the same data)
    (a) Baseline: one raw SQL query over the month's records,
            SELECT tenant_id, model_id, sum(cost_nanos), count(*) FROM chargeback_usagerecord
            WHERE occurred_at >= <first local midnight> AND occurred_at < <last local midnight>
            GROUP BY tenant_id, model_id
        (the window is the union of every statement's period, so it covers every record).
    (b) Drafts: `statements_generate(period_key=...)`, the service behind `manage.py
        generate_statements` and the monthly beat job: a draft statement with its lines for every
        billable tenant, from none (the drafts of the previous run are deleted first, untimed),
        timed from the call to its return (its transaction committed).
    Each of (a) and (b) runs once untimed (the first draft run, cold, is printed too), then both
    are timed 3 times, alternately; the medians count. The figure that matters is drafts /
    GROUP BY (target <= 2). Both share the machine with whatever else runs on it, so compare
    ratios, not seconds, across runs.
    (c) Finalize: `statements_generate(period_key=..., finalize=True)` on those drafts: each is
        regenerated one last time, numbered, frozen and rendered to PDF. Skipped (and said so) when
        `chargeback.statement_documents` (the PDF renderer) cannot be imported.
    Also, not part of the ratio: the same drafts regenerated one tenant at a time with
    `statement_generate` (the per-tenant path statement_finalize uses), timed, and compared field by
    field and line by line with the batch's statements (`--no-one-by-one` skips it).

Correctness guard
    Σ statement totals (cents) must equal Σ over statements of the statement's usage cost rounded
    to cents (half-even), computed here straight from the raw records with this script's own tree
    walk and zone arithmetic, plus the shared pools' costs rounded to cents (each pool's cost is
    spread over its targets and conserved to the cent). Printed as both sums and OK/MISMATCH; the
    script exits non-zero on a mismatch or when the one-by-one statements differ from the batch.

Data (setup, not measured)
    Its own database (`chargeback_bench_statements`, dropped and recreated at each run, migrated,
    left afterwards for inspection unless --drop-db).
    Tenants: 1,000 billable tenants (`--tenants`): 4 % of them as teams under 8 non-billable
    organisations (one with a negotiated gpt-4o-mini price override); 6 % as billable organisations
    with two billable teams each (the organisation's statement covers its own usage and a
    non-billable project, one organisation has an 8 % markup its teams inherit); the rest
    standalone customers and teams, a quarter of them with 1-3 non-billable projects, a fifth of
    the customers with a markup or discount. Time zones: mostly UTC or whole-hour zones (US, Europe
    with the October DST change, Tokyo, Singapore, Sydney, São Paulo), about 8 % on half-hour or
    45-minute offsets (Asia/Kolkata, Australia/Adelaide, America/St_Johns, Asia/Kathmandu), whose
    month starts and ends mid-UTC-hour. Two shared-cost pools (proportional over 20 tenants, and
    to one owner) take 2 % of the usage.
    Records: 5,000,000 (`--records`) in October 2026 (`--period`), each inside its statement's
    month: tenant sizes log-normal (a few large tenants, a long tail), 2-6 models per tenant out of
    ten (OpenAI, Anthropic, Google, Azure, one unpriced in-house model), log-normal token counts,
    cache reads and writes, reasoning tokens, feature and customer tags, a diurnal and weekly
    pattern in the tenant's local time, 1 % errors (token counts are drawn from 2,048 log-normal
    combinations per model). Each row is priced by the service's own `PriceBook.quote` (overrides,
    dated genai-prices prices; one quote per price-override scope, model and token combination,
    reused) and marked up as ingestion does, built with the columns of the ingestion fast path
    (`usage_storage.USAGE_COLUMNS`) and COPYed into chargeback_usagerecord directly (secondary
    indexes and constraints dropped during the load and rebuilt after it; `--jobs` processes build
    and COPY in parallel), then VACUUM (FREEZE, ANALYZE)d. Five to ten minutes on this machine.
    Hourly rollups: by default one SQL INSERT ... SELECT ... GROUP BY over the records, which is the
    ingestion fast path's own rollup statement (`usage_storage._rollup_from_inserted_sql`, the same
    sums and latency buckets) fed with the stored records (a few minutes);
    `chargeback.services.usage_rollups_rebuild` streams every record through Python and upserts
    the rollups (measured here at about 130 µs a record on the shared 2-core machine, over ten
    minutes for 5M records), kept for `--rollups rebuild`. Either way the script then checks
    equality on a sample: it snapshots the rollups of a few tenants (the two largest, a
    half-hour-zone one, a child project, a pool, a New York one), rebuilds them with
    usage_rollups_rebuild, and compares every column of every row.
    `--reuse` skips all this when the database holds the data of an earlier run with the same
    parameters (statements are emptied first): for quick reruns, not for reported figures.

    SECRET_KEY is not needed (the script sets a throwaway one).
    .venv/bin/python bench/statements.py                                   # 1,000 tenants, 5M records
    .venv/bin/python bench/statements.py --tenants 200 --records 500000    # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
sys.path.insert(0, str(ROOT))

# (IANA zone, weight): mostly UTC and whole-hour zones, a few half-hour and 45-minute offsets.
ZONES = [
    ("UTC", 38), ("America/New_York", 12), ("America/Los_Angeles", 8), ("America/Chicago", 4),
    ("Europe/London", 6), ("Europe/Berlin", 9), ("Asia/Tokyo", 5), ("Asia/Singapore", 3),
    ("Australia/Sydney", 3), ("America/Sao_Paulo", 3), ("Asia/Kolkata", 4), ("Australia/Adelaide", 1),
    ("America/St_Johns", 1), ("Asia/Kathmandu", 1),
]  # fmt: skip
# (provider as the client spells it, model as the client spells it, weight, reasoning share of output)
MODELS = [
    ("openai", "gpt-4o", 26, 0.0),
    ("openai", "gpt-4o-mini", 28, 0.0),
    ("openai", "gpt-4.1", 6, 0.0),
    ("openai", "o3-mini", 3, 0.6),
    ("anthropic", "claude-sonnet-4-5", 14, 0.0),
    ("anthropic", "claude-haiku-4-5", 5, 0.0),
    ("gcp.gemini", "gemini-2.5-pro", 8, 0.3),
    ("google", "gemini-2.5-flash", 8, 0.2),
    ("azure.ai.openai", "gpt-4o", 2, 0.0),
    ("acme-internal", "in-house-llm", 1, 0.0),  # no price anywhere: unpriced, counted, never $0
]
MODEL_INDEX = {model: index for index, model in enumerate(MODELS)}
FEATURES = ["chat", "search", "summarize", "support-bot", "autocomplete", "code-review", "extract",
            "classify", "translate", "agent", "rag", "eval"]  # fmt: skip
MARKUPS = ["10", "12.5", "15", "20", "25", "-5"]
# Share of a day's calls in each local hour (a working-day curve) and of a weekend day's.
HOUR_WEIGHTS = [2, 1, 1, 1, 1, 2, 4, 7, 10, 12, 12, 11, 10, 11, 12, 12, 11, 9, 7, 6, 5, 4, 3, 2]
WEEKEND_FACTOR = 0.35
POOL_SHARE = 0.02


# --------------------------------------------------------------------------- tenants


@dataclass
class TenantSpec:
    slug: str
    kind: str
    parent: str | None
    zone: str
    billable: bool
    markup: str | None = None
    has_usage: bool = True
    id: int = 0
    billed_by: str = ""  # the billable tenant whose statement covers this one ("" if none)
    models: list = field(default_factory=list)
    tags: list = field(default_factory=list)


def build_tree(n_billable: int, rng: random.Random) -> list[TenantSpec]:
    """Tenant specs, parents before children, with exactly n_billable billable tenants."""
    zones, weights = zip(*ZONES, strict=True)

    def zone() -> str:
        return rng.choices(zones, weights=weights)[0]

    specs: list[TenantSpec] = []
    billable = 0
    # Non-billable organisations with five billable teams each (the organisation reports no usage).
    for org in range(max(1, n_billable // 125)):
        org_zone = zone()
        specs.append(TenantSpec(f"org-{org:03d}", "organization", None, org_zone, False, has_usage=False))
        for team in range(5):
            slug = f"org-{org:03d}-team-{team}"
            specs.append(TenantSpec(slug, "team", f"org-{org:03d}", org_zone, True))
            billable += 1
            for project in range(rng.choice([0, 0, 1, 2])):
                specs.append(TenantSpec(f"{slug}-proj-{project}", "project", slug, org_zone, False))
    # Billable organisations with two billable teams and a project of their own.
    for org in range(max(1, n_billable // 50)):
        slug, org_zone = f"borg-{org:03d}", zone()
        specs.append(TenantSpec(slug, "organization", None, org_zone, True, markup="8" if org == 0 else None))
        specs.append(TenantSpec(f"{slug}-proj", "project", slug, org_zone, False))
        billable += 1
        for team in range(2):
            specs.append(TenantSpec(f"{slug}-team-{team}", "team", slug, org_zone, True))
            billable += 1
    # Standalone customers and teams, a quarter of them with projects.
    index = 0
    while billable < n_billable:
        kind = "customer" if rng.random() < 0.6 else "team"
        slug = f"{'cust' if kind == 'customer' else 'team'}-{index:04d}"
        markup = rng.choice(MARKUPS) if kind == "customer" and rng.random() < 0.2 else None
        spec = TenantSpec(slug, kind, None, zone(), True, markup=markup)
        specs.append(spec)
        billable += 1
        index += 1
        if rng.random() < 0.25:
            for project in range(rng.randint(1, 3)):
                specs.append(TenantSpec(f"{slug}-proj-{project}", "project", slug, spec.zone, False))
    # Shared pools (not billable, not below any billable tenant): their cost is spread by rules.
    specs.append(TenantSpec("shared-platform", "team", None, "UTC", False))
    specs.append(TenantSpec("shared-evals", "team", None, "Europe/Berlin", False))

    by_slug = {spec.slug: spec for spec in specs}
    for spec in specs:  # parents come first
        parent = by_slug.get(spec.parent) if spec.parent else None
        spec.billed_by = spec.slug if spec.billable else (parent.billed_by if parent else "")
    for spec in specs:
        chosen = rng.sample(range(len(MODELS)), rng.randint(2, 6))
        spec.models = [(MODELS[i], MODELS[i][2] * rng.uniform(0.3, 3)) for i in chosen]
        features = rng.sample(FEATURES, rng.randint(1, 4))
        customers = [f"c{rng.randrange(10_000):04d}" for _ in range(rng.choice([0, 0, 3, 20]))]
        spec.tags = [(feature, customer) for feature in features for customer in (customers or [None])]
    return specs


def create_tenants(specs: list[TenantSpec], rng: random.Random) -> dict:
    from decimal import Decimal

    from chargeback.models import PriceOverride, SharedCostRule
    from tenants.models import Tenant

    ids: dict[str, int] = {}
    pending = list(specs)
    while pending:
        level = [spec for spec in pending if spec.parent is None or spec.parent in ids]
        created = Tenant.objects.bulk_create(
            Tenant(slug=spec.slug, name=spec.slug.replace("-", " ").title(), kind=spec.kind,
                   parent_id=ids.get(spec.parent), time_zone=spec.zone, is_billable=spec.billable,
                   billing_email=f"ap@{spec.slug}.example" if spec.billable else "",
                   markup_percent=None if spec.markup is None else Decimal(spec.markup))
            for spec in level
        )  # fmt: skip
        for spec, tenant in zip(level, created, strict=True):
            ids[spec.slug] = spec.id = tenant.pk
        pending = [spec for spec in pending if spec.slug not in ids]
    PriceOverride.objects.create(
        tenant_id=ids["org-000"], provider="", model="gpt-4o-mini", valid_from=datetime(2024, 1, 1, tzinfo=UTC),
        input_per_mtok=Decimal("0.12"), cached_input_per_mtok=Decimal("0.06"), output_per_mtok=Decimal("0.48"),
        note="bench: negotiated",
    )  # fmt: skip
    billable = sorted(spec.id for spec in specs if spec.billable)
    proportional = SharedCostRule.objects.create(
        name="Platform", pool_id=ids["shared-platform"], method=SharedCostRule.Method.PROPORTIONAL
    )
    proportional.targets.set(rng.sample(billable, min(20, len(billable))))
    SharedCostRule.objects.create(
        name="Evaluations", pool_id=ids["shared-evals"], method=SharedCostRule.Method.OWNER,
        owner_id=billable[0],
    )  # fmt: skip
    return ids


# --------------------------------------------------------------------------- periods


def local_month(period_key: str, zone: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the month in the zone (this script's own arithmetic)."""
    first = date.fromisoformat(f"{period_key}-01")
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return tuple(
        datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC) for day in (first, following)
    )  # fmt: skip


def hour_slots(start: datetime, end: datetime, zone: str) -> tuple[int, list[float]]:
    """(hours in [start, end), cumulative weights of each hour by local hour of day and weekday)."""
    hours = int((end - start).total_seconds() // 3600)
    cumulative, total = [], 0.0
    for index in range(hours):
        local = (start + timedelta(hours=index)).astimezone(ZoneInfo(zone))
        total += HOUR_WEIGHTS[local.hour] * (WEEKEND_FACTOR if local.weekday() >= 5 else 1.0)
        cumulative.append(total)
    return hours, cumulative


# --------------------------------------------------------------------------- records


def admin_dsn(args) -> str:
    return f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres"


def bench_dsn(args) -> str:
    return f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.db}"


def record_counts(specs: list[TenantSpec], total: int, rng: random.Random) -> dict[str, int]:
    """Records per tenant: log-normal sizes; pools take POOL_SHARE; every active tenant gets some."""
    users = [spec for spec in specs if spec.has_usage and spec.billed_by]
    pools = [spec for spec in specs if spec.has_usage and not spec.billed_by]
    counts = {}
    pool_total = int(total * POOL_SHARE) if pools else 0
    for index, spec in enumerate(pools):
        counts[spec.slug] = pool_total // len(pools) + (1 if index < pool_total % len(pools) else 0)
    weights = [rng.lognormvariate(0, 1.4) for _ in users]
    remaining = total - pool_total
    scale = remaining / sum(weights)
    assigned = [max(1, math.floor(weight * scale)) for weight in weights]
    order = sorted(range(len(users)), key=lambda i: -weights[i])
    difference = remaining - sum(assigned)
    step = 1 if difference > 0 else -1
    position = 0
    while difference:
        index = order[position % len(order)]
        if step > 0 or assigned[index] > 1:
            assigned[index] += step
            difference -= step
        position += 1
    counts.update({spec.slug: count for spec, count in zip(users, assigned, strict=True)})
    return counts


TOKEN_COMBINATIONS = 2048  # distinct token-bucket combinations per model (log-normal draws)


def token_pool(rng: random.Random) -> list[list[tuple[int, int, int, int, int, int]]]:
    """Per model: (uncached input, cache read, cache write, output, reasoning, context) combinations."""
    pools = []
    for _, client_model, _, reasoning_share in MODELS:
        pool = []
        for _ in range(TOKEN_COMBINATIONS):
            context_tokens = int(rng.lognormvariate(6.6, 1.1)) + 1
            output = int(rng.lognormvariate(5.0, 1.0)) + 1
            cached = cache_write = 0
            if client_model.startswith("claude"):
                roll = rng.random()
                if roll < 0.35:
                    cached = int(context_tokens * rng.uniform(0.5, 0.9))
                elif roll < 0.45:
                    cache_write = int(context_tokens * rng.uniform(0.3, 0.8))
            elif context_tokens >= 1024 and rng.random() < 0.3:
                cached = (int(context_tokens * rng.uniform(0.3, 0.95)) // 128) * 128
            reasoning = int(output * reasoning_share * rng.random()) if reasoning_share else 0
            uncached = context_tokens - cached - cache_write
            pool.append((uncached, cached, cache_write, output, reasoning, context_tokens))
        pools.append(pool)
    return pools


def _worker(job: int, jobs: int, context: dict) -> tuple[int, int]:
    """Build and COPY the rows of every jobs-th tenant (by size); returns (rows, Σ cost nanos).

    Rows are priced by PriceBook.quote; a quote is reused for the same (overrides that can apply to
    the tenant, model, token combination), as the price book gives the same answer for them."""
    import msgspec

    from chargeback import money
    from chargeback.models import PricingSource
    from chargeback.pricing import TokenBuckets, normalize_model, normalize_provider
    from chargeback.usage_storage import USAGE_COLUMNS

    assert len(USAGE_COLUMNS) == 24, "the usage row layout changed: update this script"
    rng = random.Random(context["seed"] * 1000 + job)
    price_book, factors, counts = context["price_book"], context["factors"], context["counts"]
    override_tenants, pools = context["override_tenants"], context["pools"]
    specs = [spec for spec in context["specs"] if counts.get(spec.slug)]
    specs.sort(key=lambda spec: -counts[spec.slug])
    mine = specs[job::jobs]
    encoder = msgspec.json.Encoder(order="sorted")
    names = [(normalize_provider(p), normalize_model(m, normalize_provider(p))) for p, m, *_ in MODELS]
    quotes: dict[tuple, tuple] = {}
    copied = cost_sum = 0
    unpriced = PricingSource.UNPRICED.value
    event_base = job * 10**9
    with psycopg.connect(context["dsn"]) as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY chargeback_usagerecord ({', '.join(USAGE_COLUMNS)}) FROM STDIN") as copy:
            for spec in mine:
                count = counts[spec.slug]
                start, hours, cumulative, _ = context["periods"][spec.billed_by or spec.slug]
                slots = rng.choices(range(hours), cum_weights=cumulative, k=count)
                models = rng.choices(
                    [m for m, _ in spec.models], weights=[w for _, w in spec.models], k=count
                )
                tag_texts = [
                    encoder.encode({"feature": f, **({"customer": c} if c else {})}).decode()
                    for f, c in spec.tags
                ]
                tags = rng.choices(tag_texts, k=count)
                factor = factors.get(spec.id)
                price_class = frozenset(context["chains"][spec.id]) & override_tenants
                for index in range(count):
                    occurred = start + timedelta(
                        seconds=slots[index] * 3600 + rng.randrange(3_600_000) / 1000
                    )
                    model_index = MODEL_INDEX[models[index]]
                    combination = rng.randrange(TOKEN_COMBINATIONS)
                    uncached, cached, cache_write, output, reasoning, context_tokens = pools[model_index][
                        combination
                    ]
                    key = (price_class, model_index, combination)
                    quoted = quotes.get(key)
                    if quoted is None:
                        provider, model = names[model_index]
                        quote = price_book.quote(
                            tenant_id=spec.id, provider=provider, model=model, at=occurred,
                            buckets=TokenBuckets(uncached, cached, cache_write, output, reasoning),
                            reported_cost_nanos=None,
                        )  # fmt: skip
                        version = quote.price_version if quote.pricing_source != unpriced else ""
                        quoted = quotes[key] = (
                            quote.list_cost_nanos,
                            quote.model_id,
                            quote.pricing_source,
                            version,
                        )
                    list_cost, model_id, pricing_source, price_version = quoted
                    cost = (
                        list_cost
                        if factor is None or list_cost is None
                        else money.apply_factor(list_cost, factor)
                    )
                    event_id = f"ev-{event_base + copied:012d}"
                    copy.write_row((
                        spec.id, event_id, hashlib.md5(event_id.encode()).hexdigest(), occurred,
                        occurred + timedelta(seconds=2), names[model_index][0], models[index][1], model_id,
                        uncached, cached, cache_write, output, reasoning,
                        int(200 + context_tokens * 0.05 + output * rng.uniform(8, 30)),
                        "error" if rng.random() < 0.01 else "ok", tags[index], list_cost, cost, None,
                        pricing_source, price_version, "api", 0, None,
                    ))  # fmt: skip
                    copied += 1
                    cost_sum += cost or 0
        conn.commit()
    return copied, cost_sum


_CONTEXT: dict = {}


def _run_worker(job_and_jobs: tuple[int, int]) -> tuple[int, int]:
    return _worker(*job_and_jobs, _CONTEXT)


def _secondary_indexes(conn, table: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(constraints other than the primary key, indexes not backing a constraint) as (name, definition)."""
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass"
        " AND contype IN ('u', 'f')",
        [table],
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN"
        " (SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
        [table, table],
    ).fetchall()
    return constraints, indexes


def load_records(args, specs, counts, ids) -> tuple[int, int]:
    from django.db import connection

    from chargeback import money
    from chargeback.models import PriceOverride
    from chargeback.pricing import PriceBook

    by_slug = {spec.slug: spec for spec in specs}
    chains = {}
    for spec in specs:
        chain, current = [], spec
        while current is not None:
            chain.append(current.id)
            current = by_slug.get(current.parent) if current.parent else None
        chains[spec.id] = chain
    markups = {spec.id: spec.markup for spec in specs}
    factors = {}
    for tenant_id, chain in chains.items():
        markup = next((markups[a] for a in chain if markups[a] is not None), None)
        if markup is not None:
            from decimal import Decimal

            factors[tenant_id] = money.percent_factor(Decimal(markup))
    periods = {}
    for spec in specs:
        if spec.billable or not spec.billed_by:
            start, end = local_month(args.period, spec.zone)
            hours, cumulative = hour_slots(start, end, spec.zone)
            periods[spec.slug] = (start, hours, cumulative, spec.zone)
    price_book = PriceBook(tenant_chains=chains)
    override_tenants = frozenset(
        PriceOverride.objects.exclude(tenant=None).values_list("tenant_id", flat=True)
    )
    connection.close()  # the workers are forked; each opens its own connection
    _CONTEXT.update(seed=args.seed, price_book=price_book, factors=factors, counts=counts, specs=specs,
                    periods=periods, dsn=bench_dsn(args), chains=chains, override_tenants=override_tenants,
                    pools=token_pool(random.Random(args.seed)))  # fmt: skip

    table = "chargeback_usagerecord"
    with psycopg.connect(bench_dsn(args), autocommit=True) as conn:
        constraints, indexes = _secondary_indexes(conn, table)
        for name, _ in constraints:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
    jobs = max(1, args.jobs)
    started = time.perf_counter()
    if jobs == 1:
        results = [_run_worker((0, 1))]
    else:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_run_worker, [(job, jobs) for job in range(jobs)])
    copied = time.perf_counter()
    with psycopg.connect(bench_dsn(args), autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        for _, definition in indexes:
            conn.execute(definition)
        for name, definition in constraints:
            conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        indexed = time.perf_counter()
        conn.execute(f"VACUUM (FREEZE, ANALYZE) {table}")
    print(f"  rows built and COPYed by {jobs} processes in {copied - started:.0f} s, indexes and constraints"
          f" rebuilt in {indexed - copied:.0f} s, VACUUM in {time.perf_counter() - indexed:.0f} s")  # fmt: skip
    return sum(r[0] for r in results), sum(r[1] for r in results)


# --------------------------------------------------------------------------- rollups


def build_rollups(args, window: tuple[datetime, datetime]) -> str:
    from django.db import connection, transaction

    from chargeback import usage_storage
    from chargeback.services import usage_rollups_rebuild

    if args.rollups == "rebuild":
        usage_rollups_rebuild(start=window[0], end=window[1])
        return "chargeback.services.usage_rollups_rebuild"
    # The fast path's rollup statement reads the CTE `inserted`: the new rows as its INSERT ... RETURNING
    # gives them back (these expressions); here they are the stored rows.
    returned = getattr(usage_storage, "_RETURNED", None) or usage_storage._RETURNED_COLUMNS
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(
            f"WITH inserted AS (SELECT {', '.join(returned)} FROM chargeback_usagerecord"
            f" WHERE occurred_at >= %s AND occurred_at < %s) {usage_storage._rollup_from_inserted_sql()}",
            list(window),
        )
    return "one SQL INSERT ... SELECT ... GROUP BY (the ingestion fast path's rollup statement)"


def rollup_sample_check(specs, counts, window) -> tuple[bool, int, int]:
    """Snapshot some tenants' rollups, rebuild them with usage_rollups_rebuild, compare every column."""
    from chargeback.models import UsageRollupHourly
    from chargeback.services import usage_rollups_rebuild

    with_usage = sorted((spec for spec in specs if counts.get(spec.slug)), key=lambda s: -counts[s.slug])
    sample = {with_usage[0].id, with_usage[1].id}
    for predicate in (
        lambda s: s.billable and s.zone in {"Asia/Kolkata", "America/St_Johns", "Australia/Adelaide"},
        lambda s: s.kind == "project",
        lambda s: not s.billed_by,
        lambda s: s.billable and s.zone == "America/New_York",
    ):
        found = next((spec for spec in with_usage if predicate(spec)), None)
        if found is not None:
            sample.add(found.id)
    fields = [f.attname for f in UsageRollupHourly._meta.fields if f.name != "id"]

    def snapshot():
        rows = UsageRollupHourly.objects.filter(tenant_id__in=sample).values_list(*fields)
        return sorted(rows)

    before = snapshot()
    usage_rollups_rebuild(tenant_ids=sorted(sample), start=window[0], end=window[1])
    after = snapshot()
    return before == after, len(sample), len(before)


# --------------------------------------------------------------------------- measurements

GROUP_BY_SQL = (
    "SELECT tenant_id, model_id, sum(cost_nanos), count(*) FROM chargeback_usagerecord"
    " WHERE occurred_at >= %s AND occurred_at < %s GROUP BY tenant_id, model_id"
)


def group_by_run(window) -> tuple[float, int]:
    """Seconds for the baseline query (rows fetched), and its number of groups."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(GROUP_BY_SQL, list(window))
        rows = cursor.fetchall()
    return time.perf_counter() - started, len(rows)


def drafts_run(period_key: str) -> tuple[float, list]:
    """Seconds for statements_generate of the month, from no statements at all (the drafts of an
    earlier run are deleted first, untimed)."""
    from chargeback.models import Statement, StatementLine
    from chargeback.services import statements_generate

    StatementLine.objects.filter(statement__period_key=period_key, statement__status="draft").delete()
    Statement.objects.filter(period_key=period_key, status="draft").delete()
    started = time.perf_counter()
    drafts = statements_generate(period_key=period_key)
    return time.perf_counter() - started, drafts


def statements_snapshot(period_key: str) -> dict:
    from chargeback.models import Statement, StatementLine

    skip = {"id", "generated_at", "statement"}
    statement_fields = [f.attname for f in Statement._meta.fields if f.name not in skip | {"pdf"}]
    line_fields = [f.attname for f in StatementLine._meta.fields if f.name not in skip]
    statements = {
        row[0]: row
        for row in Statement.objects.filter(period_key=period_key)
        .exclude(status="void")
        .values_list("id", *statement_fields)
    }
    lines: dict[int, list] = {statement_id: [] for statement_id in statements}
    for row in StatementLine.objects.filter(statement_id__in=statements).order_by("statement_id", "position").values_list(
        "statement_id", *line_fields
    ):  # fmt: skip
        lines[row[0]].append(row[1:])
    return {
        row[1]: (row[1:], lines[statement_id]) for statement_id, row in statements.items()
    }  # by tenant id


def correctness_guard(args, specs, period_key) -> tuple[int, int, int]:
    """(Σ statement total cents, Σ cents of usage rounded per statement, Σ cents of the shared pools)."""
    from django.db import connection

    from chargeback import money
    from chargeback.models import Statement

    covered: dict[str, list[int]] = {}
    for spec in specs:
        if spec.billed_by:
            covered.setdefault(spec.billed_by, []).append(spec.id)
    by_slug = {spec.slug: spec for spec in specs}
    by_period: dict[tuple, list[str]] = {}
    for slug in covered:
        by_period.setdefault(local_month(period_key, by_slug[slug].zone), []).append(slug)
    expected = 0
    with connection.cursor() as cursor:
        for (start, end), slugs in by_period.items():
            tenant_ids = [tenant_id for slug in slugs for tenant_id in covered[slug]]
            cursor.execute(
                "SELECT tenant_id, sum(cost_nanos) FROM chargeback_usagerecord WHERE tenant_id = ANY(%s)"
                " AND occurred_at >= %s AND occurred_at < %s GROUP BY tenant_id",
                [tenant_ids, start, end],
            )
            cost = {tenant_id: int(total or 0) for tenant_id, total in cursor.fetchall()}
            expected += sum(
                money.round_to_cents(sum(cost.get(t, 0) for t in covered[slug])) for slug in slugs
            )
        shared = 0
        for spec in specs:
            if spec.has_usage and not spec.billed_by:
                start, end = local_month(period_key, spec.zone)
                cursor.execute(
                    "SELECT coalesce(sum(cost_nanos), 0) FROM chargeback_usagerecord WHERE tenant_id = %s"
                    " AND occurred_at >= %s AND occurred_at < %s",
                    [spec.id, start, end],
                )
                shared += money.round_to_cents(int(cursor.fetchone()[0]))
    total = sum(
        Statement.objects.filter(period_key=period_key)
        .exclude(status="void")
        .values_list("total_cents", flat=True)
    )
    return total, expected, shared


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000, help="billable tenants (1000)")
    parser.add_argument("--records", type=int, default=5_000_000, help="usage records (5000000)")
    parser.add_argument("--period", default="2026-10", help="the month, YYYY-MM (2026-10)")
    parser.add_argument("--rollups", choices=["sql", "rebuild"], default="sql",
                        help="how the hourly rollups are built (sql: one INSERT ... SELECT)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="processes building and COPYing rows (2)")
    parser.add_argument("--no-one-by-one", dest="one_by_one", action="store_false",
                        help="skip regenerating the drafts one tenant at a time")  # fmt: skip
    parser.add_argument("--no-finalize", dest="finalize", action="store_false", help="skip (c)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--db", default="chargeback_bench_statements", help="bench database, recreated")
    parser.add_argument("--drop-db", action="store_true", help="drop the bench database at the end")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the tenants, records and rollups of an earlier run with the same --tenants,"
                             " --records, --period, --seed and --rollups (statements are emptied); for quick"
                             " reruns while changing statement code, not for reported figures")  # fmt: skip
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", default="5432")
    parser.add_argument("--pg-user", default="postgres")
    return parser.parse_args(argv)


def data_signature(args) -> str:
    return f"tenants={args.tenants} records={args.records} period={args.period} seed={args.seed} rollups={args.rollups}"


def setup_django(args) -> bool:
    """Recreate and migrate the database (or, with --reuse, keep one whose data matches), then
    set Django up on it. True when the data is reused."""
    os.environ.update(
        DATABASE_URL=f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.db}",
        SECRET_KEY=os.environ.get("SECRET_KEY") or "bench-only-secret-key",
        DJANGO_SETTINGS_MODULE="chargeback.settings",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        CELERY_BROKER_URL="memory://",
    )
    os.environ.pop("PYTHONPATH", None)
    reuse = False
    if args.reuse:
        try:
            with psycopg.connect(bench_dsn(args)) as conn:
                row = conn.execute("SELECT signature FROM bench_statements_data").fetchone()
            reuse = row is not None and row[0] == data_signature(args)
        except psycopg.Error:
            pass
    if not reuse:
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.db}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=os.environ, check=True)
    import django

    django.setup()
    return reuse


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    print(
        f"database {args.db}: {'reusing if it matches' if args.reuse else 'recreating'}, migrating ...",
        flush=True,
    )
    reused = setup_django(args)
    from django.db import connection

    from chargeback.models import Statement, StatementLine, UsageRollupHourly
    from chargeback.services import statement_generate, statements_generate
    from tenants.models import Tenant

    specs = build_tree(args.tenants, rng)
    if reused:
        ids = dict(Tenant.objects.values_list("slug", "id"))
        for spec in specs:
            spec.id = ids[spec.slug]
        slugs = {tenant_id: slug for slug, tenant_id in ids.items()}
        with connection.cursor() as cursor:
            cursor.execute("SELECT tenant_id, count(*) FROM chargeback_usagerecord GROUP BY tenant_id")
            counts = {slugs[tenant_id]: count for tenant_id, count in cursor.fetchall()}
            # TRUNCATE fires no row triggers, so finalized statements of the earlier run go too.
            cursor.execute(
                "TRUNCATE chargeback_statementline, chargeback_statement, chargeback_statementnumberseries"
            )
    else:
        ids = create_tenants(specs, rng)
        counts = record_counts(specs, args.records, rng)
    billable = [spec for spec in specs if spec.billable]
    zones = {spec.zone for spec in billable}
    periods = [local_month(args.period, zone) for zone in zones | {"UTC", "Europe/Berlin"}]
    window = (min(p[0] for p in periods), max(p[1] for p in periods))
    odd = sum(1 for spec in billable if local_month(args.period, spec.zone)[0].minute)
    print(
        f"tenants: {len(specs):,} ({len(billable):,} billable in {len(zones)} zones, {odd} of them on a"
        f" half-hour or 45-minute offset; {sum(1 for s in specs if s.kind == 'project')} child projects;"
        " 2 shared pools)",
        flush=True,
    )

    failed = False
    if reused:
        print(f"records and rollups: reused ({sum(counts.values()):,} records; --reuse)", flush=True)
    else:
        started = time.perf_counter()
        rows, cost_nanos = load_records(args, specs, counts, ids)
        print(f"records: {rows:,} COPYed in {time.perf_counter() - started:.0f} s (setup, not measured),"
              f" cost {cost_nanos / 1e9:,.2f} USD", flush=True)  # fmt: skip
        started = time.perf_counter()
        how = build_rollups(args, window)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE chargeback_usagerolluphourly")
            cursor.execute("CHECKPOINT")
        rollup_rows = UsageRollupHourly.objects.count()
        print(f"rollups: {rollup_rows:,} rows by {how} in {time.perf_counter() - started:.0f} s", flush=True)
        equal, sampled, sampled_rows = rollup_sample_check(specs, counts, window)
        print(
            f"  sample check: {sampled} tenants, {sampled_rows:,} rollup rows, rebuilt by usage_rollups_rebuild:"
            f" {'equal' if equal else 'DIFFERENT'}",
            flush=True,
        )
        failed = not equal
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE bench_statements_data (signature text)")
            cursor.execute("INSERT INTO bench_statements_data VALUES (%s)", [data_signature(args)])

    print(
        f"\nmonth {args.period}, window {window[0]:%Y-%m-%d %H:%M} .. {window[1]:%Y-%m-%d %H:%M} UTC",
        flush=True,
    )
    # Each side is run once untimed (cold caches, and for the drafts the process's first price
    # lookups), then both are timed 3 times, alternately, so that the machine's other load hits
    # both alike; the medians count.
    _, groups = group_by_run(window)
    cold, _ = drafts_run(args.period)
    group_by_timings, drafts_timings = [], []
    for _ in range(3):
        group_by_timings.append(group_by_run(window)[0])
        seconds, drafts = drafts_run(args.period)
        drafts_timings.append(seconds)
    group_by, drafts_seconds = statistics.median(group_by_timings), statistics.median(drafts_timings)
    line_count = StatementLine.objects.filter(statement__period_key=args.period).count()
    print(f"  (a) GROUP BY tenant, model   {group_by:8.3f} s  (median of"
          f" {', '.join(f'{t:.3f}' for t in group_by_timings)}; {groups:,} groups)")  # fmt: skip
    print(f"  (b) drafts                   {drafts_seconds:8.3f} s  (median of"
          f" {', '.join(f'{t:.3f}' for t in drafts_timings)}; first, cold: {cold:.3f} s;"
          f" {len(drafts):,} statements, {line_count:,} lines)")  # fmt: skip
    ratio = drafts_seconds / group_by
    print(
        f"      drafts / GROUP BY        {ratio:8.2f}    (target <= 2) -> {'OK' if ratio <= 2 else 'OVER'}",
        flush=True,
    )

    total, expected, shared = correctness_guard(args, specs, args.period)
    ok = total == expected + shared
    failed |= not ok
    print(f"  guard: Σ statement totals {total:,} cents; Σ usage rounded per statement {expected:,} + shared pools"
          f" {shared:,} = {expected + shared:,} cents -> {'OK' if ok else 'MISMATCH'}", flush=True)  # fmt: skip

    if args.one_by_one:
        batch = statements_snapshot(args.period)
        tenants = list(Tenant.objects.filter(is_billable=True, is_active=True).order_by("slug"))
        started = time.perf_counter()
        for tenant in tenants:
            statement_generate(tenant=tenant, period_key=args.period)
        seconds = time.perf_counter() - started
        same = statements_snapshot(args.period) == batch
        failed |= not same
        print(f"      one by one (statement_generate x {len(tenants):,}) {seconds:8.3f} s"
              f" ({seconds / group_by:.2f} x GROUP BY); same statements and lines as (b):"
              f" {'yes' if same else 'NO'}", flush=True)  # fmt: skip

    if args.finalize:
        try:
            import chargeback.statement_documents  # noqa: F401
        except ImportError as error:
            print(f"  (c) finalize with PDFs       skipped (chargeback.statement_documents: {error})")
        else:
            started = time.perf_counter()
            final = statements_generate(period_key=args.period, finalize=True)
            seconds = time.perf_counter() - started
            numbered = Statement.objects.filter(period_key=args.period, status="finalized").exclude(
                pdf_sha256=""
            )
            print(f"  (c) finalize with PDFs       {seconds:8.3f} s  ({len(final):,} statements,"
                  f" {numbered.count():,} finalized with a PDF; {seconds / max(len(final), 1) * 1000:.1f} ms each)")  # fmt: skip
            total_after, _, _ = correctness_guard(args, specs, args.period)
            if total_after != total:
                failed = True
                print(f"      totals changed at finalization: {total:,} -> {total_after:,} cents")
    else:
        print("  (c) finalize with PDFs       skipped (--no-finalize)")

    connection.close()
    if args.drop_db:
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
