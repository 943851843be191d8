"""Demo data: the Acme Corp tenant tree and several weeks of realistic usage, seeded idempotently.

Token counts are drawn from real production traces (`chargeback/demo_data/`, Azure LLM inference
trace 2023); tenants, features, models, times of day, cache and reasoning tokens are assigned here.
Everything is deterministic: each (workload, UTC day) has its own seeded random generator and
event ids like `demo-globex-chat-20251103-00042`, so running the seed again, now or later, only adds
the hours that were not there yet and changes nothing else. All writes go through the services.

Traffic follows each tenant's local working hours and week, grows over the weeks (anchored on the
day the demo organisation was created, so a later run continues the same curve), has a 1% error
rate, and one runaway-retry spike: Globex's support bot on the third day before the seed, for
anomaly detection to find. A nightly evaluation job calls an in-house fine-tune no price list knows
(`acme-finetune-v2`), so unpriced usage is visible.

For cost optimisation to find: a share of the support and search calls are FAQ-like prompts asked
again and again (records carry a `prompt_hash`), and the support feature `chat` runs partly on
gpt-4o and claude-sonnet-4-5 where gpt-4o-mini serves the same feature elsewhere. Apps above this
one add their own demo data through `demo_seed_step_register` (budgets: a routing policy with an
A/B split, and the calls of both arms).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from chargeback.models import UsageRecord
from chargeback.services import IngestResult, usage_records_ingest
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create, api_key_hash, api_key_split, tenant_create

DATA_DIR = Path(__file__).resolve().parent / "demo_data"
SEED = 20231116
BATCH_SIZE = 5000
ORG_SLUG = "acme-corp"
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD_FILE = "demo_admin_password"
API_KEY_FILE = "demo_api_key"
API_KEY_NAME = "demo (seed_demo)"
EVENT_ID_PREFIX = "demo-"


@dataclass(frozen=True)
class TenantSpec:
    slug: str
    name: str
    kind: str
    parent: str | None
    time_zone: str = "Europe/Berlin"
    billing_email: str = ""
    markup_percent: Decimal | None = None


# Parents before children. Depth: acme-corp -> team -> customer/project.
TENANTS = (
    TenantSpec("acme-corp", "Acme Corp", "organization", None, billing_email="finance@acme.example"),
    TenantSpec("search", "Search", "team", "acme-corp", billing_email="search-leads@acme.example"),
    TenantSpec("support-bot", "Support Bot", "team", "acme-corp", billing_email="support-eng@acme.example"),
    TenantSpec("code-assist", "Code Assist", "team", "acme-corp", billing_email="devex@acme.example"),
    TenantSpec("platform", "Platform", "team", "acme-corp", billing_email="platform@acme.example"),
    TenantSpec(
        "globex",
        "Globex Corporation",
        "customer",
        "support-bot",
        time_zone="America/New_York",
        billing_email="ap@globex.example",
        markup_percent=Decimal(15),
    ),
    TenantSpec(
        "initech",
        "Initech",
        "customer",
        "support-bot",
        time_zone="America/Chicago",
        billing_email="accounts.payable@initech.example",
    ),
    TenantSpec("search-rerank", "Search reranker", "project", "search"),
    TenantSpec("code-review-bot", "Code review bot", "project", "code-assist"),
)

# Relative traffic by local hour (0-23) and by weekday (Monday first).
OFFICE_HOURS = (
    0.10, 0.07, 0.05, 0.05, 0.05, 0.08, 0.15, 0.35, 0.70, 0.95, 1.00, 1.00,
    0.80, 0.90, 1.00, 1.00, 0.95, 0.80, 0.55, 0.40, 0.30, 0.25, 0.20, 0.15,
)  # fmt: skip
CUSTOMER_HOURS = (
    0.15, 0.10, 0.08, 0.07, 0.07, 0.10, 0.25, 0.50, 0.80, 1.00, 1.00, 1.00,
    0.95, 0.95, 1.00, 1.00, 0.95, 0.85, 0.70, 0.60, 0.50, 0.40, 0.30, 0.20,
)  # fmt: skip
NIGHTLY_BATCH = tuple(1.0 if 1 <= hour <= 3 else 0.0 for hour in range(24))
WORKWEEK = (1.0, 1.05, 1.05, 1.0, 0.85, 0.30, 0.25)
SEVEN_DAYS = (1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.9)
CUSTOMER_WEEK = (1.0, 1.0, 1.0, 1.0, 0.9, 0.45, 0.40)

# model -> (provider, time to first token in ms, ms per output token)
MODELS = {
    "gpt-4o": ("openai", 450, 11.0),
    "gpt-4o-mini": ("openai", 300, 7.0),
    "o4-mini": ("openai", 900, 5.0),
    "claude-sonnet-4-5": ("anthropic", 600, 14.0),
    "claude-3-5-haiku-latest": ("anthropic", 350, 7.5),
    "gemini-2.5-flash": ("google", 280, 4.0),
    "gemini-2.5-pro": ("google", 700, 9.0),
    "acme-finetune-v2": ("acme", 200, 12.0),
}
REASONING_MODELS = {"o4-mini", "gemini-2.5-pro"}


@dataclass(frozen=True)
class Workload:
    """One stream of calls: a tenant's feature, with its trace, models and daily volume."""

    key: str
    tenant: str
    feature: str
    trace: str  # "conv" or "code"
    per_day: float  # calls on a full weekday at growth 1.0
    models: dict[str, float]
    prompt_templates: tuple[str, ...]
    hours: tuple[float, ...] = OFFICE_HOURS
    week: tuple[float, ...] = WORKWEEK
    customer: str = ""
    staging_share: float = 0.08
    tags: dict[str, str] = field(default_factory=dict)
    # The share of calls that are one of `faq_prompts` recurring prompts (they carry a prompt_hash).
    faq_share: float = 0.0
    faq_prompts: int = 30


WORKLOADS = (
    Workload(
        "globex-chat",
        "globex",
        "chat",
        "conv",
        1100,
        {"gpt-4o-mini": 0.55, "claude-3-5-haiku-latest": 0.25, "gpt-4o": 0.20},
        ("support-triage-v3", "support-answer-v7", "support-summary-v2"),
        hours=CUSTOMER_HOURS,
        week=CUSTOMER_WEEK,
        customer="globex",
        faq_share=0.3,
    ),
    Workload(
        "initech-chat",
        "initech",
        "chat",
        "conv",
        650,
        {"gpt-4o-mini": 0.6, "claude-sonnet-4-5": 0.4},
        ("support-triage-v3", "support-answer-v7"),
        hours=CUSTOMER_HOURS,
        week=CUSTOMER_WEEK,
        customer="initech",
        faq_share=0.25,
    ),
    Workload(
        "search-summary",
        "search",
        "search-summary",
        "conv",
        1000,
        {"gemini-2.5-flash": 0.7, "gpt-4o-mini": 0.2, "gemini-2.5-pro": 0.1},
        ("search-answer-v12", "search-snippet-v4"),
        faq_share=0.15,
        faq_prompts=60,
    ),
    Workload(
        "search-rerank",
        "search-rerank",
        "rerank",
        "code",
        550,
        {"gemini-2.5-flash": 0.8, "gpt-4o-mini": 0.2},
        ("rerank-listwise-v2",),
    ),
    Workload(
        "code-completion",
        "code-assist",
        "code-completion",
        "code",
        900,
        {"claude-sonnet-4-5": 0.45, "gpt-4o": 0.2, "o4-mini": 0.25, "claude-3-5-haiku-latest": 0.1},
        ("completion-inline-v5", "completion-chat-v2"),
    ),
    Workload(
        "code-review",
        "code-review-bot",
        "code-review",
        "code",
        170,
        {"o4-mini": 0.5, "claude-sonnet-4-5": 0.5},
        ("review-diff-v3",),
        staging_share=0.0,
    ),
    Workload(
        "platform-eval",
        "platform",
        "eval",
        "conv",
        120,
        {"gpt-4o-mini": 0.5, "gpt-4o": 0.3, "claude-sonnet-4-5": 0.2},
        ("eval-judge-v1",),
        hours=NIGHTLY_BATCH,
        week=SEVEN_DAYS,
        staging_share=1.0,
    ),
    Workload(
        "platform-finetune",
        "platform",
        "eval",
        "conv",
        8,
        {"acme-finetune-v2": 1.0},
        ("eval-finetune-v1",),
        hours=NIGHTLY_BATCH,
        week=SEVEN_DAYS,
        staging_share=1.0,
    ),
)


@dataclass(frozen=True)
class Spike:
    """Extra calls of one workload during some local hours of one day (a runaway retry loop)."""

    workload: str
    days_before_anchor: int
    local_hours: range
    factor: float
    model: str


SPIKE = Spike("globex-chat", days_before_anchor=3, local_hours=range(10, 15), factor=6.0, model="gpt-4o")

GROWTH_PER_4_WEEKS = 1.6
ERROR_RATE = 0.01


@cache
def trace(name: str) -> tuple[tuple[int, int], ...]:
    """(input tokens, output tokens) of each request of a shipped trace."""
    path = DATA_DIR / f"azure_llm_trace_{name}_2023.csv.gz"
    with gzip.open(path, "rt", newline="") as handle:
        return tuple(
            (int(row["ContextTokens"]), int(row["GeneratedTokens"])) for row in csv.DictReader(handle)
        )


def growth(day: date, anchor: date) -> float:
    """Traffic multiplier: 1.0 on the anchor day, 1.6x per four weeks, flat beyond 4 weeks after it."""
    days = max(min((day - anchor).days, 28), -120)
    return GROWTH_PER_4_WEEKS ** (days / 28)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _record(rng: random.Random, workload: Workload, event_id: str, at: datetime, model: str) -> dict:
    provider, ttft_ms, ms_per_token = MODELS[model]
    input_tokens, output_tokens = rng.choice(trace(workload.trace))
    cached = cache_write = reasoning = 0
    if provider == "anthropic":
        # Prompt caching of the system prompt and tools: mostly reads, sometimes a (re)write.
        prefix = min(input_tokens, rng.choice((1024, 2048, 3072)))
        draw = rng.random()
        if draw < 0.55:
            cached = prefix
        elif draw < 0.62:
            cache_write = prefix
    elif provider in ("openai", "google") and input_tokens >= 1024 and rng.random() < 0.45:
        # Automatic prefix caching, in 128-token blocks.
        cached = int(input_tokens * rng.uniform(0.3, 0.9)) // 128 * 128
    if model in REASONING_MODELS:
        reasoning = int(output_tokens * rng.lognormvariate(0.8, 0.6))
        output_tokens += reasoning
    status = "ok"
    latency = ttft_ms * rng.lognormvariate(0, 0.35) + input_tokens * 0.02
    latency += output_tokens * ms_per_token * rng.lognormvariate(0, 0.2)
    if rng.random() < ERROR_RATE:
        # A timeout or a server error: the input was processed, no output billed.
        status = "error"
        output_tokens = reasoning = 0
        latency = rng.choice((30_000, 60_000)) if rng.random() < 0.5 else latency * 0.3
    environment = "staging" if rng.random() < workload.staging_share else "production"
    tags = {
        "feature": workload.feature,
        "prompt_template": rng.choice(workload.prompt_templates),
        "environment": environment,
        **workload.tags,
    }
    if workload.customer:
        tags["customer"] = workload.customer
    record = {
        "event_id": event_id,
        "timestamp": at,
        "tenant": workload.tenant,
        "provider": provider,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_input_tokens": cached,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
        "latency_ms": int(latency),
        "status": status,
        "tags": tags,
    }
    prompt_hash = _faq_prompt_hash(workload, event_id, model)
    if prompt_hash is not None:
        record["prompt_hash"] = prompt_hash
    return record


def demo_call(rng: random.Random, workload: Workload, event_id: str, at: datetime, model: str) -> dict:
    """One call of a workload on a model, as the demo draws them (for demo steps of other apps)."""
    return _record(rng, workload, event_id, at, model)


def _faq_prompt_hash(workload: Workload, event_id: str, model: str) -> str | None:
    """Whether this call is a recurring prompt, and which: from a digest of its event id, so that the
    generator's random sequence (and every other figure) is the same with or without it."""
    if not workload.faq_share:
        return None
    draw = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")
    if draw % 10_000 >= workload.faq_share * 10_000:
        return None
    prompt = (draw // 10_000) % workload.faq_prompts
    return "sha256:" + hashlib.sha256(f"{workload.key}:{model}:faq-{prompt}".encode()).hexdigest()


def _hour_counts(
    workload: Workload, day: date, zone: ZoneInfo, multiplier: float
) -> list[tuple[datetime, float]]:
    """(UTC hour start, expected calls) for the 24 UTC hours of `day`, by local hour and weekday."""
    total_weight = sum(workload.hours)
    hours = []
    for hour in range(24):
        start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
        local = start.astimezone(zone)
        weight = workload.hours[local.hour] * workload.week[local.weekday()]
        hours.append((start, workload.per_day * multiplier * weight / total_weight))
    return hours


def day_records(workload: Workload, day: date, anchor: date, time_zone: str) -> list[dict]:
    """Every call of `workload` on UTC `day`; the same list whenever it is computed."""
    rng = random.Random(f"{SEED}:{workload.key}:{day.isoformat()}")
    zone = ZoneInfo(time_zone)
    multiplier = growth(day, anchor) * rng.lognormvariate(0, 0.08)
    records = []
    stamp = day.strftime("%Y%m%d")
    for start, expected in _hour_counts(workload, day, zone, multiplier):
        count = int(expected + rng.random())
        for _ in range(count):
            at = start + timedelta(milliseconds=rng.randrange(3_600_000))
            event_id = f"{EVENT_ID_PREFIX}{workload.key}-{stamp}-{len(records):05d}"
            records.append(_record(rng, workload, event_id, at, _pick(rng, workload.models)))
    if SPIKE.workload == workload.key and day == anchor - timedelta(days=SPIKE.days_before_anchor):
        spike_rng = random.Random(f"{SEED}:spike:{day.isoformat()}")
        for start, expected in _hour_counts(workload, day, zone, multiplier):
            if start.astimezone(zone).hour not in SPIKE.local_hours:
                continue
            for index in range(int(expected * (SPIKE.factor - 1))):
                at = start + timedelta(milliseconds=spike_rng.randrange(3_600_000))
                event_id = f"{EVENT_ID_PREFIX}{workload.key}-spike-{stamp}-{start.hour:02d}-{index:05d}"
                records.append(_record(spike_rng, workload, event_id, at, SPIKE.model))
    return records


def demo_records(*, start: datetime, end: datetime, anchor: date) -> Iterator[dict]:
    """All demo calls with start <= timestamp < end, day by day."""
    zones = {spec.slug: spec.time_zone for spec in TENANTS}
    day = start.date()
    while day <= (end - timedelta(microseconds=1)).date():
        for workload in WORKLOADS:
            for record in day_records(workload, day, anchor, zones[workload.tenant]):
                if start <= record["timestamp"] < end:
                    yield record
        day += timedelta(days=1)


# --- the seed ---------------------------------------------------------------------------------------


@dataclass
class SeedReport:
    tenants_created: list[str] = field(default_factory=list)
    usage: IngestResult = field(default_factory=IngestResult)
    records_generated: int = 0
    start: datetime | None = None
    end: datetime | None = None
    admin_username: str = ADMIN_USERNAME
    admin_password: str | None = None
    admin_created: bool = False
    api_key: str = ""
    api_key_created: bool = False
    # Lines about what demo steps of other apps added, for the command to print.
    notes: list[str] = field(default_factory=list)


def _now() -> datetime:
    return timezone.now()


# Demo data of apps above this one, added after the usage: each step gets the report, the demo
# tenants by slug, the anchor day, the days seeded and now. Registered in their AppConfig.ready().
DemoSeedStep = Callable[..., None]
_demo_seed_steps: list[DemoSeedStep] = []


def demo_seed_step_register(step: DemoSeedStep) -> None:
    """Run `step(report=..., tenants=..., anchor=..., days=..., now=...)` after the demo's usage."""
    if step not in _demo_seed_steps:
        _demo_seed_steps.append(step)


def seed_tenants(report: SeedReport) -> dict[str, Tenant]:
    """Create the demo tenants that do not exist yet; existing ones (maybe edited) are left alone."""
    existing = {tenant.slug: tenant for tenant in Tenant.objects.filter(slug__in=[s.slug for s in TENANTS])}
    for spec in TENANTS:
        if spec.slug in existing:
            continue
        existing[spec.slug] = tenant_create(
            slug=spec.slug,
            name=spec.name,
            kind=spec.kind,
            parent=existing[spec.parent] if spec.parent else None,
            time_zone=spec.time_zone,
            billing_email=spec.billing_email,
            markup_percent=spec.markup_percent,
        )
        report.tenants_created.append(spec.slug)
    return existing


def seed_usage(
    report: SeedReport, *, tenants: dict[str, Tenant], anchor: date, days: int, now: datetime, progress=None
) -> None:
    """Ingest the demo calls of [now - days, now), whole UTC hours, that are not stored yet."""
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    report.start, report.end = start, end
    tenant_ids = {slug: tenant.pk for slug, tenant in tenants.items()}
    # Records already stored are skipped before pricing, so that a re-run is quick; the ingestion
    # service would count them as duplicates anyway.
    stored = set(
        UsageRecord.objects.filter(
            tenant_id__in=tenant_ids.values(),
            occurred_at__gte=start,
            occurred_at__lt=end,
            event_id__startswith=EVENT_ID_PREFIX,
        ).values_list("tenant_id", "event_id")
    )
    batch: list[dict] = []

    def flush() -> None:
        report.usage.merge(
            usage_records_ingest(items=batch, scope_tenant_ids=None, default_tenant_id=None, source="import")
        )
        del report.usage.errors[20:]
        batch.clear()
        if progress:
            progress(report)

    for record in demo_records(start=start, end=end, anchor=anchor):
        report.records_generated += 1
        if (tenant_ids[record["tenant"]], record["event_id"]) in stored:
            report.usage.duplicates += 1
            continue
        batch.append(record)
        if len(batch) >= BATCH_SIZE:
            flush()
    if batch:
        flush()


def _var_file(name: str) -> Path:
    var_dir = Path(settings.VAR_DIR)
    var_dir.mkdir(parents=True, exist_ok=True)
    return var_dir / name


def _write_secret(path: Path, value: str) -> None:
    path.write_text(value + "\n")
    path.chmod(0o600)


def seed_admin(report: SeedReport) -> None:
    """A superuser `admin` whose password is generated once and kept in var/demo_admin_password."""
    path = _var_file(ADMIN_PASSWORD_FILE)
    password = path.read_text().strip() if path.exists() else ""
    user_model = get_user_model()
    if user_model.objects.filter(username=ADMIN_USERNAME).exists():
        # Never reset someone's password; show the stored one if we made it.
        report.admin_password = password or None
        return
    if not password:
        password = secrets.token_urlsafe(12)
        _write_secret(path, password)
    user_model.objects.create_superuser(
        username=ADMIN_USERNAME, email="admin@acme.example", password=password
    )
    report.admin_password = password
    report.admin_created = True


def seed_api_key(report: SeedReport) -> None:
    """A global key (ingest, read, admin) whose secret is kept in var/demo_api_key; reused while valid."""
    path = _var_file(API_KEY_FILE)
    if path.exists():
        secret = path.read_text().strip()
        split = api_key_split(secret)
        stored = ApiKey.objects.filter(prefix=split[0], is_active=True).first() if split else None
        if stored is not None and stored.secret_hash == api_key_hash(secret):
            report.api_key = secret
            return
    _, secret = api_key_create(name=API_KEY_NAME, scopes=["ingest", "read", "admin"], tenant=None)
    _write_secret(path, secret)
    report.api_key = secret
    report.api_key_created = True


def seed_demo(*, days: int = 28, progress=None) -> SeedReport:
    """Seed (or top up) the demo: tenants, usage for the last `days` days, an admin and an API key."""
    report = SeedReport()
    now = _now()
    tenants = seed_tenants(report)
    # Growth and the spike are anchored on the organisation's creation day, so that later runs
    # regenerate exactly the same calls for days already seeded.
    anchor = tenants[ORG_SLUG].created_at.astimezone(UTC).date()
    seed_usage(report, tenants=tenants, anchor=anchor, days=days, now=now, progress=progress)
    for step in _demo_seed_steps:
        step(report=report, tenants=tenants, anchor=anchor, days=days, now=now)
    seed_admin(report)
    seed_api_key(report)
    return report


__all__ = [
    "SEED",
    "TENANTS",
    "WORKLOADS",
    "SeedReport",
    "day_records",
    "demo_call",
    "demo_records",
    "demo_seed_step_register",
    "growth",
    "seed_demo",
]
