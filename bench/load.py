"""Sustained mixed load on a real gunicorn server on PostgreSQL, then an exactly-once check.

What it does
    For --duration seconds (default 60), --clients client processes (default 4), each on one
    keep-alive connection, send a mix (--mix, default ingest=3,allowance=5,costs=2) of:
      - POST /api/v1/usage/      batches of --batch new records (default 100), trace-shaped (see
                                 bench/harness.py), timestamped in the last two hours; 5 % of the
                                 batches are exact resends of an acknowledged batch and 2 % conflicting
                                 resends of one (same event ids, other tokens and tags);
      - POST /api/v1/allowance/  for a random tenant and model (budgets on three tenants);
      - GET  /api/v1/costs/      grouped by tenant, model, provider or a tag, by hour, day or total.
    A batch that fails (5xx, transport error) is sent once more, as a client would.

What it prints
    Requests, throughput (requests/s; records/s for ingestion) and p50/p99 latency per endpoint,
    answers by status, transport errors. Then the check, on the database: every event id the server
    acknowledged (a 2xx answer that names no error for it) is stored exactly once, none of the
    unacknowledged ones is stored twice, no conflicting resend changed a stored record, and the
    hourly rollups count every stored record. It ends with one line, "exactly-once: OK ..." or
    "exactly-once: FAILED ...", and exits non-zero if the check failed or any 5xx or transport
    error occurred.

    --short is the correctness run of the test suite (tests/chargeback/test_load_short.py): about
    12 s of load, two clients, small batches. No figure of it is asserted anywhere.

The server: `gunicorn chargeback.wsgi` (--workers, default 2) on a bench database created and
migrated by this script (--db, default chargeback_load; dropped and recreated), with budget counters
in Redis when --redis-url is given (else the allowance check reads the database), and an in-memory
broker (the budget evaluations ingestion queues go nowhere: no worker runs).

    .venv/bin/python bench/load.py                   # 60 s
    .venv/bin/python bench/load.py --short --drop-db
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
from harness import (
    TENANTS,
    add_server_arguments,
    bench_dsn,
    create_tenants_and_key,
    finish_database,
    free_port,
    load_traces,
    make_records,
    recreate_database,
    server_env,
    start_server,
    stop_server,
)

ENDPOINTS = ("ingest", "allowance", "costs")
PATHS = {"ingest": "/api/v1/usage/", "allowance": "/api/v1/allowance/", "costs": "/api/v1/costs/"}
# Budgets the allowance check weighs (slug, USD a month, action).
BUDGETS = [("acme", "5000", "block"), ("acme-search", "50", "block"), ("globex", "800", "notify")]
_BUDGET_SETUP = """
from budgets.models import Budget
from budgets.services import budget_save
for slug, amount, action in spec["budgets"]:
    budget_save(
        budget=Budget(tenant=by_slug[slug], name=f"{slug} monthly", amount_nanos=int(Decimal(amount) * 10**9),
                      period="month", action=action),
        thresholds=[{"percent": Decimal("80")}],
    )
"""
COST_GROUPS = ["tenant", "model", "tenant,model", "provider", "tag.feature", "tag.customer"]
COST_GRANULARITIES = ["hour", "day", "total"]
ALLOWANCE_MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")]
EXACT_RESEND_SHARE = 0.05
CONFLICTING_RESEND_SHARE = 0.02


# --------------------------------------------------------------------------- a client process


class _Client:
    """One client process: its connection, its records and what the server answered."""

    def __init__(self, number: int, args, port: int, secret: str, templates: list[dict]):
        self.number = number
        self.args = args
        self.port = port
        self.headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        self.templates = templates
        self.rng = random.Random(args.seed * 1000 + number)
        self.connection: http.client.HTTPConnection | None = None
        self.sequence = 0
        self.latencies: dict[str, list[float]] = {endpoint: [] for endpoint in ENDPOINTS}
        self.statuses: dict[str, Counter] = {endpoint: Counter() for endpoint in ENDPOINTS}
        self.transport_errors: Counter = Counter()
        self.records_sent = 0
        self.acknowledged: set[str] = set()
        self.unacknowledged: set[str] = set()
        self.acknowledged_batches: list[list[dict]] = []
        self.surprises: list[str] = []  # answers that contradict what was sent

    def request(self, endpoint: str, method: str, path: str, body: bytes | None = None):
        """(status, decoded answer), or None after a transport error (the connection is renewed)."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body=body, headers=self.headers)
            response = self.connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.transport_errors[f"{endpoint}: {type(error).__name__}"] += 1
            self.connection.close()
            self.connection = None
            return None
        self.latencies[endpoint].append(time.perf_counter() - started)
        self.statuses[endpoint][response.status] += 1
        try:
            return response.status, json.loads(payload)
        except ValueError:
            return response.status, None

    def new_batch(self) -> list[dict]:
        now = datetime.now(UTC)
        self.sequence += 1
        batch = []
        for index in range(self.args.batch):
            record = dict(self.rng.choice(self.templates))
            record["event_id"] = f"load-{self.number}-{self.sequence}-{index}"
            record["timestamp"] = (now - timedelta(seconds=self.rng.uniform(1, 7200))).isoformat()
            batch.append(record)
        return batch

    def ingest(self) -> None:
        roll = self.rng.random()
        if self.acknowledged_batches and roll < CONFLICTING_RESEND_SHARE:
            original = self.rng.choice(self.acknowledged_batches)
            batch = [{**record, "output_tokens": record["output_tokens"] + 1,
                      "tags": {**record["tags"], "variant": "conflict"}} for record in original]  # fmt: skip
            kind = "conflicts"
        elif self.acknowledged_batches and roll < CONFLICTING_RESEND_SHARE + EXACT_RESEND_SHARE:
            batch, kind = self.rng.choice(self.acknowledged_batches), "duplicates"
        else:
            batch, kind = self.new_batch(), "accepted"
        body = msgspec.json.encode(batch)
        for _attempt in range(2):  # a failed batch is sent once more, as a client would
            answer = self.request("ingest", "POST", PATHS["ingest"], body)
            if answer is not None and answer[0] < 500:
                break
        if kind == "accepted":
            self.records_sent += len(batch)
        event_ids = [record["event_id"] for record in batch]
        status, body = answer or (None, None)
        if status == 422 and kind == "conflicts":
            # Nothing in it could be stored (every record conflicts): the counts are in the details.
            body = body["error"]["details"]
        elif status != 200 or body is None:
            if kind == "accepted":
                self.unacknowledged.update(event_ids)
            return
        result = body
        refused = {error["event_id"] for error in result["errors"] if error["code"] != "conflict"}
        if kind == "accepted":
            self.acknowledged.update(event_id for event_id in event_ids if event_id not in refused)
            self.unacknowledged.update(refused)
            self.acknowledged_batches = [*self.acknowledged_batches[-19:], batch]
        if result[kind] != len(batch):
            self.surprises.append(f"a batch of {len(batch)} expected all {kind}: {result}")

    def allowance(self) -> None:
        provider, model = self.rng.choice(ALLOWANCE_MODELS)
        body = {"tenant": self.rng.choice(TENANTS)[0], "provider": provider, "model": model,
                "estimated_cost_usd": "0.02", "tags": {"feature": "search"}}  # fmt: skip
        answer = self.request("allowance", "POST", PATHS["allowance"], msgspec.json.encode(body))
        if answer is not None and answer[0] == 200 and "allowed" not in (answer[1] or {}):
            self.surprises.append(f"an allowance answer without a decision: {answer[1]}")

    def costs(self) -> None:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = end - timedelta(days=self.rng.choice([1, 2, 7]))
        query = (
            f"?group_by={self.rng.choice(COST_GROUPS)}&granularity={self.rng.choice(COST_GRANULARITIES)}"
            f"&start={start:%Y-%m-%dT%H:%M:%SZ}&end={end:%Y-%m-%dT%H:%M:%SZ}"
        )
        self.request("costs", "GET", PATHS["costs"] + query)

    def run(self, until: float, mix: dict[str, int]) -> dict:
        operations = [getattr(self, endpoint) for endpoint in mix]
        weights = list(mix.values())
        while time.time() < until:
            self.rng.choices(operations, weights)[0]()
        if self.connection is not None:
            self.connection.close()
        return {
            "latencies": self.latencies,
            "statuses": {endpoint: dict(counts) for endpoint, counts in self.statuses.items()},
            "transport_errors": dict(self.transport_errors),
            "records_sent": self.records_sent,
            "acknowledged": sorted(self.acknowledged),
            "unacknowledged": sorted(self.unacknowledged - self.acknowledged),
            "surprises": self.surprises[:5],
        }


def _client_process(number, args, port, secret, templates, start_at, until, mix, results) -> None:
    client = _Client(number, args, port, secret, templates)
    time.sleep(max(0.0, start_at - time.time()))
    results.put((number, client.run(until, mix)))


def run_clients(args, port: int, secret: str, templates: list[dict], mix: dict[str, int]) -> list[dict]:
    """Fork the client processes, run them for args.duration seconds from a common start, and
    gather what each saw."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 1.0
    until = start_at + args.duration
    clients = [
        context.Process(
            target=_client_process,
            args=(number, args, port, secret, templates, start_at, until, mix, results),
        )
        for number in range(args.clients)
    ]
    for client in clients:
        client.start()
    gathered = dict(results.get() for _ in clients)  # before join: a full queue would block the child
    for client in clients:
        client.join()
    return [gathered[number] for number in range(args.clients)]


# --------------------------------------------------------------------------- the check


def check_exactly_once(args, acknowledged: list[str], unacknowledged: list[str]) -> tuple[bool, str]:
    """The database against the answers: (ok, the summary line)."""
    with psycopg.connect(bench_dsn(args)) as conn:
        conn.execute("CREATE TEMP TABLE sent (event_id text PRIMARY KEY, acknowledged boolean NOT NULL)")
        with conn.cursor().copy("COPY sent (event_id, acknowledged) FROM STDIN") as copy:
            for event_id in acknowledged:
                copy.write_row((event_id, True))
            for event_id in unacknowledged:
                copy.write_row((event_id, False))
        (stored_acknowledged, stored_unacknowledged) = conn.execute(
            "SELECT count(*) FILTER (WHERE sent.acknowledged), count(*) FILTER (WHERE NOT sent.acknowledged)"
            " FROM sent JOIN chargeback_usagerecord AS usage ON usage.event_id = sent.event_id"
        ).fetchone()
        (stored_twice,) = conn.execute(
            "SELECT count(*) FROM (SELECT event_id FROM chargeback_usagerecord GROUP BY event_id"
            " HAVING count(*) > 1) AS twice"
        ).fetchone()
        (replaced,) = conn.execute(
            "SELECT count(*) FROM chargeback_usagerecord WHERE tags->>'variant' = 'conflict'"
        ).fetchone()
        (records,) = conn.execute("SELECT count(*) FROM chargeback_usagerecord").fetchone()
        (rolled_up,) = conn.execute(
            "SELECT coalesce(sum(requests), 0) FROM chargeback_usagerolluphourly"
        ).fetchone()
    ok = (
        stored_acknowledged == len(acknowledged)
        and stored_twice == 0
        and replaced == 0
        and rolled_up == records
        and records == stored_acknowledged + stored_unacknowledged
    )
    line = (
        f"exactly-once: {'OK' if ok else 'FAILED'}: {stored_acknowledged:,} of {len(acknowledged):,} acknowledged"
        f" records stored, {stored_twice} event ids stored twice; {len(unacknowledged):,} unacknowledged"
        f" ({stored_unacknowledged:,} stored); {replaced} records replaced by a conflicting resend;"
        f" {records:,} records, {rolled_up:,} in the hourly rollups"
    )
    return ok, line


# --------------------------------------------------------------------------- main


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(args, outcomes: list[dict]) -> tuple[int, int]:
    """Print the figures; returns (5xx answers, transport errors)."""
    server_errors = 0
    print(
        f"load: {args.duration:.0f} s, {args.clients} clients, gunicorn -w {args.workers}, batches of {args.batch}"
    )
    print(f"  {'endpoint':<10} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}  answers")
    for endpoint in ENDPOINTS:
        latencies = [value for outcome in outcomes for value in outcome["latencies"][endpoint]]
        statuses = Counter()
        for outcome in outcomes:
            statuses.update({int(status): count for status, count in outcome["statuses"][endpoint].items()})
        server_errors += sum(count for status, count in statuses.items() if status >= 500)
        if not latencies:
            print(f"  {endpoint:<10} {0:>9}")
            continue
        answers = ", ".join(f"{status}: {count:,}" for status, count in sorted(statuses.items()))
        print(
            f"  {endpoint:<10} {len(latencies):>9,} {len(latencies) / args.duration:>8,.1f}"
            f" {_percentile(latencies, 0.5) * 1000:>8,.1f} {_percentile(latencies, 0.99) * 1000:>8,.1f}  {answers}"
        )
    records = sum(outcome["records_sent"] for outcome in outcomes)
    print(f"  ingested   {records:,} new records sent, {records / args.duration:,.0f} records/s")
    transport = Counter()
    for outcome in outcomes:
        transport.update(outcome["transport_errors"])
    print(
        f"  errors     {server_errors} answers 5xx, {sum(transport.values())} transport errors {dict(transport) or ''}"
    )
    surprises = [surprise for outcome in outcomes for surprise in outcome["surprises"]]
    for surprise in surprises[:5]:
        print(f"  unexpected {surprise}")
    print(
        f"  machine    load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs, shared with anything else running)"
    )
    return server_errors, sum(transport.values()) + len(surprises)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (60)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (4)")
    parser.add_argument("--batch", type=int, default=100, help="records per ingest request (100)")
    parser.add_argument(
        "--mix", default="ingest=3,allowance=5,costs=2", help="relative weights of the endpoints"
    )
    parser.add_argument(
        "--short", action="store_true", help="a small correctness run: 12 s, 2 clients, batches of 20"
    )
    parser.add_argument("--redis-url", default="", help="Redis for budget counters and the cache (none)")
    parser.add_argument("--seed", type=int, default=2026)
    add_server_arguments(parser, db="chargeback_load")
    args = parser.parse_args()
    if args.short:
        args.duration, args.clients, args.batch = 12, 2, 20
    mix = {name: int(weight) for name, _, weight in (part.partition("=") for part in args.mix.split(","))}
    if not set(mix) <= set(ENDPOINTS) or not any(mix.values()):
        parser.error(f"--mix names endpoints among {', '.join(ENDPOINTS)} with weights")

    traces = load_traces()
    templates = make_records(2000, prefix="template-", seed=args.seed, traces=traces)
    print(f"database {args.db}: recreating and migrating ...", flush=True)
    recreate_database(args)
    secret = create_tenants_and_key(
        args, TENANTS, more_setup=f"spec['budgets'] = {BUDGETS!r}\n" + _BUDGET_SETUP
    )
    with tempfile.TemporaryDirectory(prefix="chargeback-load-") as var_dir:
        env = server_env(
            args,
            CELERY_BROKER_URL="memory://",
            REDIS_URL=args.redis_url,
            REDIS_KEY_PREFIX=f"chargeback-load-{os.getpid()}",
            CHARGEBACK_VAR_DIR=var_dir,  # the file cache (without Redis) and anything else under var/
            ALLOWANCE_RATE_LIMIT="1000000000/min",
        )
        port = free_port()
        server = start_server(args, port, env=env)
        try:
            # Warm every worker (imports, price caches, connections) before the clock starts.
            warm = _Client(-1, args, port, secret, templates)
            for _ in range(2 * args.workers):
                for endpoint in ENDPOINTS:
                    getattr(warm, endpoint)()
            outcomes = run_clients(args, port, secret, templates, mix)
        finally:
            stop_server(server)

    server_errors, other_errors = report(args, outcomes)
    acknowledged = [event_id for outcome in outcomes for event_id in outcome["acknowledged"]]
    unacknowledged = [event_id for outcome in outcomes for event_id in outcome["unacknowledged"]]
    ok, line = check_exactly_once(
        args, acknowledged + sorted(warm.acknowledged), unacknowledged + sorted(warm.unacknowledged)
    )
    print(line)
    finish_database(args)
    return 0 if ok and not server_errors and not other_errors and acknowledged else 1


if __name__ == "__main__":
    sys.exit(main())
