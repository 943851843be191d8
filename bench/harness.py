"""What the benchmarks share: trace-shaped usage records, and a bench database behind a real
gunicorn server (create, migrate, seed tenants and a key; start and stop the server).

The scripts in bench/ import it as a sibling module (`import harness`): each is run as
`.venv/bin/python bench/<script>.py`, which puts bench/ on the import path.
"""

from __future__ import annotations

import csv
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DATA_DIRS = [ROOT.parent / "shared" / "data", ROOT / "shared" / "data", Path("/work/shared/data")]
TRACE_FILES = {"conv": "azure_llm_trace_conv_2023.csv", "code": "azure_llm_trace_code_2023.csv"}
PYTHON = sys.executable

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
    ("openai", "openai/gpt-4o-mini", 2, 0.0),
]
# (slug, name, parent slug, kind, markup percent)
TENANTS = [
    ("acme", "Acme Corp", None, "organization", None),
    ("acme-search", "Acme Search", "acme", "team", None),
    ("acme-support", "Acme Support", "acme", "team", None),
    ("globex", "Globex (customer)", None, "customer", "12.5"),
    ("initech", "Initech", None, "team", None),
]
TENANT_WEIGHTS = [5, 35, 25, 20, 15]
FEATURES = {"conv": ["chat", "search", "summarize", "support-bot"], "code": ["autocomplete", "code-review"]}
# The traces are from 2023-11-16 18:15 to 19:14 UTC; they are replayed once per day from here.
REPLAY_SHIFT = datetime(2025, 11, 16, tzinfo=UTC) - datetime(2023, 11, 16, tzinfo=UTC)


# --------------------------------------------------------------------------- data


def _data_file(name: str) -> Path:
    for folder in DATA_DIRS:
        if (folder / name).exists():
            return folder / name
    raise SystemExit(f"trace file {name} not found in {', '.join(map(str, DATA_DIRS))}")


def load_traces() -> list[tuple[datetime, int, int, str]]:
    """(timestamp, context tokens, generated tokens, trace kind) rows of both traces, by time."""
    rows = []
    for kind, name in TRACE_FILES.items():
        with _data_file(name).open(newline="") as handle:
            for row in csv.DictReader(handle):
                stamp = datetime.strptime(row["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
                rows.append((stamp, int(row["ContextTokens"]), int(row["GeneratedTokens"]), kind))
    rows.sort(key=lambda row: row[0])
    return rows


def make_records(n: int, *, prefix: str, seed: int, traces) -> list[dict]:
    """n records in the API's own format, deterministic for a seed."""
    rng = random.Random(seed)
    model_choices = rng.choices(MODELS, weights=[m[2] for m in MODELS], k=n)
    tenant_choices = rng.choices([t[0] for t in TENANTS], weights=TENANT_WEIGHTS, k=n)
    customers = [f"cust-{index:03d}" for index in range(60)]
    zones = [timedelta(0)] * 8 + [timedelta(hours=1), timedelta(hours=-5)]
    records = []
    for index in range(n):
        stamp, context, generated, kind = traces[index % len(traces)]
        replay = index // len(traces)
        occurred = stamp + REPLAY_SHIFT + timedelta(days=replay)
        provider, model, _, reasoning_share = model_choices[index]
        context = max(context, 1)
        cached = 0
        cache_write = 0
        if provider == "anthropic":
            roll = rng.random()
            if roll < 0.35:
                cached = int(context * rng.uniform(0.5, 0.9))
            elif roll < 0.45:
                cache_write = int(context * rng.uniform(0.3, 0.8))
        elif context >= 1024 and rng.random() < 0.3:
            cached = (int(context * rng.uniform(0.3, 0.95)) // 128) * 128
        reasoning = int(generated * reasoning_share * rng.random()) if reasoning_share else 0
        zone = rng.choice(zones)
        local = occurred.astimezone(timezone(zone))
        status = "error" if rng.random() < 0.01 else "ok"
        latency = int(180 + context * 0.05 + generated * rng.uniform(8, 30) + rng.expovariate(1 / 120))
        tags = {"feature": rng.choice(FEATURES[kind]), "customer": rng.choice(customers)}
        if rng.random() < 0.2:
            tags["environment"] = "staging"
        records.append(
            {
                "event_id": f"{prefix}{uuid.UUID(int=rng.getrandbits(128))}",
                "timestamp": local.isoformat(),
                "tenant": tenant_choices[index],
                "provider": provider,
                "model": model,
                "input_tokens": context,
                "output_tokens": generated,
                "cached_input_tokens": cached,
                "cache_write_tokens": cache_write,
                "reasoning_tokens": reasoning,
                "latency_ms": latency,
                "status": status,
                "tags": tags,
            }
        )
    return records


# --------------------------------------------------------------------------- setup


def add_server_arguments(parser, *, db: str) -> None:
    """The options every server benchmark takes: gunicorn's shape and the bench database."""
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker (1: sync)")
    parser.add_argument("--db", default=db, help=f"bench database, recreated ({db})")
    parser.add_argument("--drop-db", action="store_true", help="drop the bench database at the end")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", default="5432")
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument(
        "--pg-setting", action="append", default=[], help="NAME=VALUE set on the bench database (repeatable)"
    )


def finish_database(args) -> None:
    """Drop the bench database if asked (--drop-db), else say where it is."""
    if args.drop_db:
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    else:
        print(f"\n(database {args.db} left in place; --drop-db drops it)")


def admin_dsn(args) -> str:
    return f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres"


def bench_dsn(args) -> str:
    return f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.db}"


def server_env(args, **overrides: str) -> dict:
    """The environment of the bench's server and Django scripts (the bench database; `overrides`
    last)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH"}
    }
    env.update(
        DATABASE_URL=f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.db}",
        SECRET_KEY=os.environ.get("SECRET_KEY") or "bench-only-secret-key",
        DJANGO_SETTINGS_MODULE="chargeback.settings",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        # One key sends every batch: the per-key limit stays on, high enough never to refuse.
        INGEST_RATE_LIMIT="1000000000/min",
    )
    env.update(overrides)
    return env


def recreate_database(args) -> None:
    with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=server_env(args), check=True)
    if args.pg_setting:
        with psycopg.connect(admin_dsn(args), autocommit=True) as conn:
            for setting in args.pg_setting:
                name, _, value = setting.partition("=")
                conn.execute(f'ALTER DATABASE "{args.db}" SET {name} = {value}')


_SETUP_SCRIPT = """
import json, sys
from datetime import UTC, datetime
from decimal import Decimal
import django
django.setup()
from chargeback.models import PriceOverride
from tenants.models import Tenant
from tenants.services import api_key_create, tenant_create
spec = json.loads(sys.argv[1])
by_slug = {}
for slug, name, parent, kind, markup in spec["tenants"]:
    by_slug[slug] = tenant_create(
        slug=slug, name=name, parent=by_slug.get(parent), kind=kind,
        markup_percent=None if markup is None else Decimal(markup),
    )
# A negotiated rate for the Acme organisation (inherited by its teams).
PriceOverride.objects.create(
    tenant=by_slug["acme"], provider="", model="gpt-4o-mini", valid_from=datetime(2024, 1, 1, tzinfo=UTC),
    input_per_mtok=Decimal("0.12"), cached_input_per_mtok=Decimal("0.06"), output_per_mtok=Decimal("0.48"),
    note="bench: negotiated",
)
_, secret = api_key_create(name="bench ingest", scopes=["ingest", "read"])
"""


def create_tenants_and_key(args, tenants, *, more_setup: str = "") -> str:
    """Create `tenants` ((slug, name, parent slug, kind, markup percent) in parent-first order), a
    negotiated price for acme, and a global API key (ingest, read); returns the key's secret.
    `more_setup` is Python run after that, with the tenants in `by_slug`."""
    script = _SETUP_SCRIPT + more_setup + "\nprint(secret)\n"
    result = subprocess.run(
        [PYTHON, "-c", script, json.dumps({"tenants": tenants})],
        cwd=ROOT,
        env=server_env(args),
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args, port: int, env: dict | None = None) -> subprocess.Popen:
    """`gunicorn chargeback.wsgi` with args.workers workers (and args.threads threads), serving on
    127.0.0.1:port once this returns."""
    command = [
        str(Path(PYTHON).parent / "gunicorn"),
        "chargeback.wsgi",
        "-w",
        str(args.workers),
        "-b",
        f"127.0.0.1:{port}",
        "--timeout",
        "120",
        "--log-level",
        "warning",
    ]
    if args.threads > 1:
        command += ["--threads", str(args.threads)]
    return wait_for_server(subprocess.Popen(command, cwd=ROOT, env=env or server_env(args)), port)


def wait_for_server(server: subprocess.Popen, port: int) -> subprocess.Popen:
    """Return the server once it accepts connections on `port` (exit if it dies or takes a minute)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("gunicorn did not start within 60 s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
