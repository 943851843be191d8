"""Latency of the allowance check, as a ratio against a trivial authenticated endpoint of the same server.

What it measures
    `POST /api/v1/allowance/` ("may this tenant spend now?", asked by a gateway before every LLM
    call) against `GET /api/v1/whoami/` (same authentication: one query for the key, nothing
    else), both on the same real gunicorn server backed by PostgreSQL and Redis, under the same
    closed-loop load: C concurrent keep-alive clients (default 50) on loopback, each sending its
    next request as soon as the previous answer arrives. For each endpoint it reports p50 and p99
    latency and requests/s; the figure that matters is allowance p99 / whoami p99 (target <= 1.5):
    what the check costs on top of the fixed price of a request (HTTP, Django, DRF, the key lookup).

    The endpoints are measured in alternating rounds (whoami, allowance, allowance, whoami, ...,
    an ABBA order, so drift and machine noise hit both equally) after a warm-up of each; the
    figures reported are the medians over the rounds, and the ratio is that of the median p99s
    (the per-round ratios are shown too). Every answer must be a 200, and every allowance answer
    must come from the Redis counters (`"source": "counters"`); the count of each source seen is
    printed and the script exits non-zero otherwise.

    With the server saturated by 50 clients, latency is mostly queueing, so both percentiles
    scale with the CPU a request costs the server. That CPU (user + system time of the gunicorn
    workers from /proc, divided by the requests answered) is printed per endpoint as well: it is
    far less disturbed than latency by other work on the machine, and the load average at the end
    says how much of that there was.

Load generator
    `wrk` (Debian: `apt-get install -y wrk`) when it is on PATH: a C load generator (2 threads by
    default) that costs the server far less CPU than a Python client would on a 2-core machine.
    A generated Lua script sets the method, headers and body and counts statuses and the
    `source` of each answer; latency percentiles are wrk's own (its HdrHistogram, microseconds).
    Without wrk (or with `--client python`) the fallback is a separate Python process with one
    thread and one keep-alive http.client connection per client; its own overhead competes with
    the server for the CPUs, so its absolute figures are pessimistic (the ratio less so).

Server
    `gunicorn chargeback.wsgi` (the server the README recommends) on 127.0.0.1 with the gthread
    worker, 2 workers x 4 threads by default: one process per core, and a few threads each so
    that one request's database or Redis round trip overlaps another's Python work; gthread also
    keeps the clients' connections alive, as a gateway's HTTP client would (the sync worker closes
    each after one request, so every request would pay a TCP handshake). `--reuse-port` (on by
    default) gives each worker its own listening socket and lets the kernel spread the
    connections evenly; on one shared socket, whichever worker wakes first takes a burst of the
    50 keep-alive connections and keeps them for the whole run, and the split differs from run
    to run. CONN_MAX_AGE=600 keeps a database connection per thread. `--workers`, `--threads`,
    `--worker-class` and `--no-reuse-port` change this.

Data
    Its own PostgreSQL database (`chargeback_bench_allowance`, dropped and recreated at each run,
    left afterwards for inspection unless --drop-db), migrated; Redis db 12 with its own key prefix
    (`bench-allowance`, its keys are deleted first). A tenant tree org -> team -> project in three
    time zones, with budgets on each level (monthly/quarterly/weekly/daily, notify and block, one
    narrowed to gpt-4o, one to a tag, one to another model that does not apply, one inactive) and
    thresholds; a few thousand usage records ingested through `usage_records_ingest` (so the
    post-ingest hook fills the counters), then `budget_counters_reconcile`; an API key of the
    project tenant with scopes ingest,read. Celery tasks queued by ingestion go to an in-memory
    broker (nothing is left in var/).

    SECRET_KEY is not needed (the script sets a throwaway one for its own server).
    .venv/bin/python bench/allowance.py                          # 50 clients, 4 rounds, 20 s per endpoint
    .venv/bin/python bench/allowance.py --duration 8 --rounds 2  # quicker
    .venv/bin/python bench/allowance.py --client python          # without wrk
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import free_port, stop_server, wait_for_server

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TARGET_RATIO = 1.5

ALLOWANCE_BODY = {
    "model": "gpt-4o",
    "provider": "openai",
    "estimated_cost_usd": "0.01",
    "tags": {"feature": "search"},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=20.0, help="measured seconds per endpoint, all rounds"
    )
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per endpoint (default 4)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per endpoint (default 3)")
    parser.add_argument("-c", "--concurrency", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("-w", "--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (default 4)")
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class (default gthread)")
    parser.add_argument(
        "--reuse-port",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gunicorn --reuse-port: a listening socket per worker, connections spread by the kernel (default on)",
    )
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--db", default="chargeback_bench_allowance")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", default="5432")
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--redis-prefix", default="bench-allowance")
    parser.add_argument(
        "--records", type=int, default=3000, help="usage records ingested before (default 3000)"
    )
    parser.add_argument("--drop-db", action="store_true", help="drop the database at the end")
    parser.add_argument("--python-client-worker", help=argparse.SUPPRESS)  # internal: the fallback client
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- setup


def server_env(args) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH", "REDIS_URL", "REDIS_KEY_PREFIX"}
    }
    env.update(
        DATABASE_URL=f"postgres://{args.pg_user}@{args.pg_host}:{args.pg_port}/{args.db}",
        REDIS_URL=args.redis_url,
        REDIS_KEY_PREFIX=args.redis_prefix,
        SECRET_KEY=os.environ.get("SECRET_KEY") or "bench-only-secret-key",
        CONN_MAX_AGE="600",
        DJANGO_SETTINGS_MODULE="chargeback.settings",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        # Ingestion queues budget evaluations; keep them in memory rather than in var/broker.
        CELERY_BROKER_URL="memory://",
        # One key sends everything: the per-key limit stays on (its Redis round trip is part of the
        # check's cost) but high enough never to refuse.
        ALLOWANCE_RATE_LIMIT="1000000000/min",
    )
    return env


def recreate_database(args) -> None:
    import psycopg

    admin = f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=server_env(args), check=True)


def drop_database(args) -> None:
    import psycopg

    admin = f"postgresql://{args.pg_user}@{args.pg_host}:{args.pg_port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')


_SETUP_SCRIPT = """
import json, sys, uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
import django
django.setup()
from django.conf import settings
from budgets.counters import counters_client
from budgets.models import Budget
from budgets.services import budget_counters_reconcile, budget_save
from chargeback import money
from chargeback.pricing import model_id_for
from chargeback.services import usage_records_ingest
from tenants.services import api_key_create, tenant_create

spec = json.loads(sys.argv[1])
client = counters_client()
stale = list(client.scan_iter(match=settings.REDIS_KEY_PREFIX + ":*", count=1000))
if stale:
    client.delete(*stale)

org = tenant_create(slug="bench-org", name="Bench Org", kind="organization", time_zone="Europe/Berlin")
team = tenant_create(slug="bench-team", name="Bench Team", kind="team", parent=org, time_zone="America/New_York")
project = tenant_create(slug="bench-project", name="Bench Project", kind="project", parent=team,
                        time_zone="Asia/Kolkata")
now = datetime.now(UTC)
gpt4o = model_id_for("openai", "gpt-4o")

def budget(tenant, name, usd, period, thresholds=(), **fields):
    budget_save(
        budget=Budget(tenant=tenant, name=name, amount_nanos=money.usd_to_nanos(usd), period=period, **fields),
        thresholds=[{"percent": Decimal(p), "on_actual": True, "on_forecast": f} for p, f in thresholds],
    )

budget(org, "org monthly", "100000", "month", [("50", False), ("80", True), ("100", False)])
budget(org, "org quarterly hard cap", "250000", "quarter", [("90", False)], action="block", fail_mode="closed")
budget(team, "team monthly", "20000", "month", [("80", True), ("100", False)], action="block",
       fallback_model="gpt-4o-mini")
budget(team, "team search weekly", "5000", "week", [("75", False)], tag_key="feature", tag_value="search")
budget(team, "team claude", "3000", "month", [("90", False)], action="block", provider="anthropic",
       model=model_id_for("anthropic", "claude-sonnet-4-5"))
budget(project, "project gpt-4o daily", "2000", "day", [("50", False), ("90", False)], action="block",
       provider="openai", model=gpt4o, fallback_model="gpt-4o-mini")
budget(project, "project monthly", "10000", "month", [("50", False), ("90", True)])
budget(project, "project old", "1", "month", is_active=False)

models = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")]
features = ["search", "chat", "summarize"]
records = []
for i in range(spec["records"]):
    provider, model = models[i % len(models)]
    records.append({
        "event_id": str(uuid.uuid4()),
        "timestamp": (now - timedelta(seconds=i % 600)).isoformat().replace("+00:00", "Z"),
        "tenant": "bench-team" if i % 5 == 0 else "bench-project",
        "provider": provider,
        "model": model,
        "input_tokens": 200 + (i * 37) % 3000,
        "output_tokens": 50 + (i * 13) % 800,
        "latency_ms": 300 + i % 900,
        "status": "ok",
        "tags": {"feature": features[i % len(features)], "environment": "prod"},
    })
accepted = 0
for start in range(0, len(records), 1000):
    result = usage_records_ingest(items=records[start:start + 1000], scope_tenant_ids=None)
    accepted += result.accepted
reconciled = budget_counters_reconcile()
_, secret = api_key_create(name="bench allowance", scopes=["ingest", "read"], tenant=project)
print(json.dumps({"secret": secret, "accepted": accepted, "reconciled": reconciled,
                  "budgets": Budget.objects.filter(is_active=True).count()}))
"""


def create_fixtures(args) -> dict:
    result = subprocess.run(
        [PYTHON, "-c", _SETUP_SCRIPT, json.dumps({"records": args.records})],
        cwd=ROOT,
        env=server_env(args),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"creating the fixtures failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_server(args, port: int) -> subprocess.Popen:
    command = [
        str(Path(PYTHON).parent / "gunicorn"),
        "chargeback.wsgi",
        "--workers",
        str(args.workers),
        "--worker-class",
        args.worker_class,
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "60",
        "--log-level",
        "warning",
    ]
    if args.worker_class == "gthread":
        command += ["--threads", str(args.threads)]
    if args.reuse_port:
        command.append("--reuse-port")
    return wait_for_server(subprocess.Popen(command, cwd=ROOT, env=server_env(args)), port)


def server_cpu_seconds(server: subprocess.Popen) -> float:
    """User + system CPU time of the server's workers so far (Linux /proc; 0 elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == server.pid:  # the parent pid: a worker of this server
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# --------------------------------------------------------------------------- endpoints


def endpoints(secret: str) -> dict[str, dict]:
    auth = f"Bearer {secret}"
    return {
        "whoami": {
            "method": "GET",
            "path": "/api/v1/whoami/",
            "headers": {"Authorization": auth},
            "body": None,
        },
        "allowance": {
            "method": "POST",
            "path": "/api/v1/allowance/",
            "headers": {"Authorization": auth, "Content-Type": "application/json"},
            "body": json.dumps(ALLOWANCE_BODY, separators=(",", ":")),
        },
    }


def probe(port: int, endpoint: dict) -> tuple[int, bytes]:
    # Patient: workers import the application after they bind (and each binds its own socket with
    # --reuse-port), which takes a while on a busy machine.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request(
        endpoint["method"], endpoint["path"], body=endpoint["body"], headers=endpoint["headers"]
    )
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, payload


# --------------------------------------------------------------------------- load: wrk

_WRK_LUA = """
wrk.method = %(method)s
wrk.path = %(path)s
%(headers)s
%(body)s
local threads = {}
function setup(thread) table.insert(threads, thread) end
statuses = {}
sources = {}
function response(status, headers, body)
  local s = tostring(status)
  statuses[s] = (statuses[s] or 0) + 1
  local source = body and body:match('"source":%%s*"([^"]*)"')
  if source then sources[source] = (sources[source] or 0) + 1 end
end
local function merge(into, from)
  for k, v in pairs(from or {}) do into[k] = (into[k] or 0) + v end
end
local function encode(t)
  local parts = {}
  for k, v in pairs(t) do table.insert(parts, string.format('"%%s":%%d', k, v)) end
  return "{" .. table.concat(parts, ",") .. "}"
end
function done(summary, latency, requests)
  local all_statuses, all_sources = {}, {}
  for _, thread in ipairs(threads) do
    merge(all_statuses, thread:get("statuses"))
    merge(all_sources, thread:get("sources"))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"errors":%%d,' ..
    '"statuses":%%s,"sources":%%s}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, encode(all_statuses), encode(all_sources)))
end
"""


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal for ASCII text


def wrk_script(endpoint: dict) -> str:
    headers = "\n".join(
        f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}"
        for name, value in endpoint["headers"].items()
    )
    body = f"wrk.body = {_lua_string(endpoint['body'])}" if endpoint["body"] else ""
    return _WRK_LUA % {
        "method": _lua_string(endpoint["method"]),
        "path": _lua_string(endpoint["path"]),
        "headers": headers,
        "body": body,
    }


def run_wrk(args, port: int, script: Path, seconds: float) -> dict:
    command = [
        "wrk",
        f"-t{min(args.wrk_threads, args.concurrency)}",
        f"-c{args.concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = next((line for line in output.splitlines() if line.startswith("BENCH-JSON ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result:\n{output}")
    raw = json.loads(line.removeprefix("BENCH-JSON "))
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["errors"],
        "statuses": raw["statuses"],
        "sources": raw["sources"],
    }


# --------------------------------------------------------------------------- load: Python fallback


def python_client_worker(spec: dict) -> dict:
    """One thread and one keep-alive connection per client, until the deadline (runs in its own
    process, started by `run_python_client`)."""
    endpoint, port, seconds = spec["endpoint"], spec["port"], spec["seconds"]
    body = endpoint["body"].encode() if endpoint["body"] else None
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sources: dict[str, int] = {}
    errors = [0]
    start_barrier = threading.Barrier(spec["concurrency"] + 1)
    deadline = [0.0]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine, my_statuses, my_sources = [], {}, {}
        start_barrier.wait()
        while time.perf_counter() < deadline[0]:
            sent = time.perf_counter()
            try:
                connection.request(
                    endpoint["method"], endpoint["path"], body=body, headers=endpoint["headers"]
                )
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            mine.append(time.perf_counter() - sent)
            my_statuses[str(response.status)] = my_statuses.get(str(response.status), 0) + 1
            if b'"source"' in payload:
                source = json.loads(payload).get("source")
                my_sources[source] = my_sources.get(source, 0) + 1
        connection.close()
        with lock:
            latencies.extend(mine)
            for key, value in my_statuses.items():
                statuses[key] = statuses.get(key, 0) + value
            for key, value in my_sources.items():
                sources[key] = sources.get(key, 0) + value

    threads = [threading.Thread(target=client) for _ in range(spec["concurrency"])]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + seconds
    start_barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, max(0, round(p / 100 * len(latencies)) - 1))] * 1000

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(50),
        "p99_ms": percentile(99),
        "errors": errors[0],
        "statuses": statuses,
        "sources": sources,
    }


def run_python_client(args, port: int, endpoint: dict, seconds: float) -> dict:
    spec = {"endpoint": endpoint, "port": port, "seconds": seconds, "concurrency": args.concurrency}
    output = subprocess.run(
        [PYTHON, __file__, "--python-client-worker", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    if args.python_client_worker:
        print(json.dumps(python_client_worker(json.loads(args.python_client_worker))))
        return 0

    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not on PATH (apt-get install -y wrk), or use --client python")
    client_name = "wrk" if use_wrk else "python (http.client threads, separate process)"

    print(
        f"database {args.db}, redis {args.redis_url} prefix {args.redis_prefix!r}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    recreate_database(args)
    fixtures = create_fixtures(args)
    print(
        f"fixtures: {fixtures['accepted']} usage records ingested, {fixtures['budgets']} active budgets, "
        f"{fixtures['reconciled']} counters reconciled",
        flush=True,
    )
    port = free_port()
    server = start_server(args, port)
    tempdir = tempfile.TemporaryDirectory(prefix="bench-allowance-")
    try:
        targets = endpoints(fixtures["secret"])
        for name, endpoint in targets.items():
            # Several new connections, so that every worker has answered before the clock starts.
            for _ in range(max(10, 5 * args.workers)):
                status, payload = probe(port, endpoint)
                if status != 200:
                    raise SystemExit(f"{name}: HTTP {status}: {payload[:500]!r}")
            print(f"{name} answer: {payload.decode()}", flush=True)

        if use_wrk:
            scripts = {}
            for name, endpoint in targets.items():
                scripts[name] = Path(tempdir.name) / f"{name}.lua"
                scripts[name].write_text(wrk_script(endpoint))

            def measure(name: str, seconds: float) -> dict:
                return run_wrk(args, port, scripts[name], seconds)
        else:

            def measure(name: str, seconds: float) -> dict:
                return run_python_client(args, port, targets[name], seconds)

        worker = (
            f"{args.worker_class}, {args.workers} workers"
            + (f" x {args.threads} threads" if args.worker_class == "gthread" else "")
            + (", --reuse-port" if args.reuse_port else "")
        )
        print(
            f"server: gunicorn chargeback.wsgi ({worker}), CONN_MAX_AGE=600; client: {client_name}, "
            f"{args.concurrency} connections; {args.rounds} rounds of {args.duration / args.rounds:.1f} s "
            f"per endpoint after {args.warmup:.0f} s warm-up each",
            flush=True,
        )
        for name in targets:
            measure(name, args.warmup)

        def measure_with_cpu(name: str, seconds: float) -> dict:
            before = server_cpu_seconds(server)
            result = measure(name, seconds)
            result["cpu_us"] = (server_cpu_seconds(server) - before) / max(result["requests"], 1) * 1e6
            return result

        results: dict[str, list[dict]] = {name: [] for name in targets}
        per_round = args.duration / args.rounds
        for index in range(args.rounds):
            order = ["whoami", "allowance"] if index % 2 == 0 else ["allowance", "whoami"]
            for name in order:
                results[name].append(measure_with_cpu(name, per_round))
            line = "  ".join(
                f"{name} p50 {results[name][-1]['p50_ms']:6.2f} ms p99 {results[name][-1]['p99_ms']:6.2f} ms "
                f"{results[name][-1]['rps']:5.0f}/s cpu {results[name][-1]['cpu_us']:5.0f} us"
                for name in ("whoami", "allowance")
            )
            print(f"round {index + 1}: {line}", flush=True)
    finally:
        stop_server(server)
        tempdir.cleanup()
        if args.drop_db:
            drop_database(args)

    print()
    print(
        f"{'endpoint':<10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'server CPU us/req':>18}"
        f"   (median of {args.rounds} rounds)"
    )
    medians = {}
    for name in ("whoami", "allowance"):
        rounds = results[name]
        medians[name] = {
            key: statistics.median(result[key] for result in rounds)
            for key in ("p50_ms", "p99_ms", "rps", "cpu_us")
        }
        m = medians[name]
        print(f"{name:<10} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} {m['rps']:8.0f} {m['cpu_us']:18.0f}")
    ratio = medians["allowance"]["p99_ms"] / medians["whoami"]["p99_ms"]
    round_ratios = [
        allowance["p99_ms"] / whoami["p99_ms"]
        for allowance, whoami in zip(results["allowance"], results["whoami"], strict=True)
    ]
    print(
        f"allowance p99 / whoami p99 = {ratio:.2f} (target <= {TARGET_RATIO}: "
        f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}); per round: "
        + ", ".join(f"{value:.2f}" for value in round_ratios)
    )
    print(
        f"server CPU per request, allowance / whoami = {medians['allowance']['cpu_us'] / medians['whoami']['cpu_us']:.2f}"
        f"; load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work on the machine"
        " inflates latencies; the CPU figures are less sensitive to it)"
    )

    ok = True
    for name in ("whoami", "allowance"):
        statuses: dict[str, int] = {}
        sources: dict[str, int] = {}
        errors = 0
        for result in results[name]:
            errors += result["errors"]
            for key, value in result["statuses"].items():
                statuses[key] = statuses.get(key, 0) + value
            for key, value in result["sources"].items():
                sources[key] = sources.get(key, 0) + value
        total = sum(result["requests"] for result in results[name])
        text = f"{name}: {total} requests, statuses {dict(sorted(statuses.items()))}, socket errors {errors}"
        if name == "allowance":
            text += f", sources {dict(sorted(sources.items()))}"
            ok &= set(sources) == {"counters"} and sources["counters"] == statuses.get("200", 0)
        ok &= set(statuses) == {"200"} and errors == 0
        print(text)
    print("checks: " + ("every answer 200, every allowance answer from the counters" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
