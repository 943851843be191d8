"""Ingestion throughput over real HTTP, as a ratio against a bare PostgreSQL COPY of the same rows.

What it measures
    1. Ingest: N usage records (default 200,000) POSTed to /api/v1/usage/ in batches (default
       5,000) on a real gunicorn server (`gunicorn chargeback.wsgi -w 2` by default) backed by
       PostgreSQL, with idempotency (the unique (tenant, event_id) index: a batch holding a stored
       key goes through INSERT ... ON CONFLICT) and hourly rollups on, as in production. A separate client process (stdlib http.client, one keep-alive connection
       per client thread) sends request bodies serialised before the clock starts; records/s is N
       over the wall time from the first request to the last answer.
    2. Baseline, in the same run and on the same database: the same stored rows, written by a
       plain psycopg `COPY ... FROM STDIN (FORMAT BINARY)` into `bench_copy`, a table made with
       `CREATE TABLE bench_copy (LIKE chargeback_usagerecord INCLUDING ALL)` (same columns,
       indexes and unique constraint; LIKE copies no foreign key, so the baseline skips the
       per-row tenant check the real table makes). The COPY runs 3 times (--copy-runs) into the
       emptied table and the fastest counts, so a busy machine flatters the baseline, not the
       ingest. The figure that matters is ingest/COPY (target >= 0.5).
    3. Correctness guard: stored records == N, rollup request sum == N, and a resent batch is
       counted as duplicates and changes nothing.
    4. Peak RSS of `manage.py import_usage FILE` on a 1,000,000-record JSONL file (target under
       300 MB), measured by GNU time (`time -f %M`); run by default when the command exists
       (`--import-rss` forces it, `--no-import-rss` skips it).

The records are synthetic but shaped by real traces: input/output token counts and the arrival
pattern come from the Azure LLM inference traces in shared/data (conversation and code), spread
over a week; models are a mix of real ones (gpt-4o, gpt-4o-mini, claude-sonnet-4-5, gemini-2.5-pro,
...), with a few tenants (one with a markup, one with a negotiated price override), feature and
customer tags, latencies, cached and cache-write tokens, reasoning tokens and some errors.

Both rates are CPU-bound on a 2-core machine: anything else running (tests, other benchmarks)
slows the two-worker ingest more than the one-connection COPY, so the script prints the load
average; compare ratios from quiet runs.

The script creates its own database (`chargeback_bench` by default; dropped and recreated at
each run, left in place afterwards for inspection unless --drop-db), migrates it, starts gunicorn
on a free port and stops it at the end.

    SECRET_KEY is not needed (the script sets a throwaway one for its own server).
    .venv/bin/python bench/ingest.py                       # N=200,000, batches of 5,000
    .venv/bin/python bench/ingest.py -n 50000 --no-import-rss
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import psycopg
from harness import (
    PYTHON,
    ROOT,
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
from psycopg.adapt import Dumper
from psycopg.pq import Format

WARMUP_TENANT = "bench-warmup"


# --------------------------------------------------------------------------- client


def post_batches(port: int, secret: str, bodies: list[bytes], concurrency: int) -> tuple[float, dict, list]:
    """POST every body (each thread on its own keep-alive connection); (seconds, summed counts, failures)."""
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    totals = {"accepted": 0, "duplicates": 0, "conflicts": 0, "rejected": 0, "unpriced": 0}
    failures = []
    latencies: list[float] = []

    def run() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            sent = time.perf_counter()
            connection.request("POST", "/api/v1/usage/", body=bodies[index], headers=headers)
            response = connection.getresponse()
            payload = response.read()
            with lock:
                latencies.append(time.perf_counter() - sent)
                if response.status != 200:
                    failures.append((index, response.status, payload[:300]))
                    continue
                answer = json.loads(payload)
                for key in totals:
                    totals[key] += answer[key]
                if answer["errors"]:
                    failures.append((index, 200, answer["errors"][:3]))
        connection.close()

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals["latencies"] = latencies
    return time.perf_counter() - started, totals, failures


def _client_process(port, secret, bodies, concurrency, ready, go, results) -> None:
    ready.set()
    go.wait()
    started = time.process_time()
    elapsed, totals, failures = post_batches(port, secret, bodies, concurrency)
    totals["client_cpu"] = time.process_time() - started
    results.put((elapsed, totals, failures))


def run_client(port: int, secret: str, bodies: list[bytes], concurrency: int):
    """Time the POSTs from a separate (forked) process, which inherits the pre-serialised bodies."""
    context = multiprocessing.get_context("fork")
    ready, go, results = context.Event(), context.Event(), context.Queue()
    client = context.Process(
        target=_client_process, args=(port, secret, bodies, concurrency, ready, go, results)
    )
    client.start()
    ready.wait()
    go.set()
    outcome = results.get()
    client.join()
    return outcome


# --------------------------------------------------------------------------- CPU accounting (Linux /proc)

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _server_processes(server_pid: int, db: str) -> dict[int, str]:
    """gunicorn's workers and the PostgreSQL backends connected to the bench database."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[1]) == server_pid:
            found[int(entry.name)] = "gunicorn"
        elif command.startswith("postgres: ") and f" {db} " in command:
            found[int(entry.name)] = "postgres"
    return found


def _machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used so far (all CPUs)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


# --------------------------------------------------------------------------- baseline and checks


class _JsonText(str):
    pass


def _jsonb_text_dumper(conn) -> type[Dumper]:
    class JsonbTextDumper(Dumper):
        """jsonb in binary COPY from text that is already JSON: version byte 1, then the text."""

        format = Format.BINARY
        oid = conn.adapters.types["jsonb"].oid

        def dump(self, obj: str) -> bytes:
            return b"\x01" + obj.encode()

    return JsonbTextDumper


def copy_baseline(args) -> tuple[list[tuple[float, float, float]], int]:
    """(wall, client CPU, database CPU) seconds of each of `args.copy_runs` plain binary COPYs of the
    stored usage rows into a fresh table like the real one (the fastest is the baseline: a
    conservative ratio on a noisy machine)."""
    with psycopg.connect(bench_dsn(args)) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (LIKE chargeback_usagerecord INCLUDING ALL)")
        described = conn.execute(
            "SELECT attname, atttypid::regtype::text, atttypid::int FROM pg_attribute"
            " WHERE attrelid = 'chargeback_usagerecord'::regclass AND attnum > 0 AND NOT attisdropped"
            " AND attname <> 'id' ORDER BY attnum"
        ).fetchall()
        columns = ", ".join(name for name, _, _ in described)
        types = [oid for _, _, oid in described]
        conn.commit()
        # JSON columns travel as their stored text (not dicts re-encoded by json.dumps), so the
        # baseline pays no Python JSON cost.
        conn.adapters.register_dumper(_JsonText, _jsonb_text_dumper(conn))
        selected = ", ".join(f"{name}::text" if kind == "jsonb" else name for name, kind, _ in described)
        with conn.cursor(binary=True) as cursor:
            cursor.execute(f"SELECT {selected} FROM chargeback_usagerecord ORDER BY id")
            rows = cursor.fetchall()
        timings = []
        backend = conn.info.backend_pid
        for _ in range(args.copy_runs):
            conn.execute("TRUNCATE bench_copy")
            conn.commit()
            conn.execute("CHECKPOINT")
            cpu_before = (time.process_time(), _cpu_seconds(backend))
            started = time.perf_counter()
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY bench_copy ({columns}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            timings.append(
                (
                    time.perf_counter() - started,
                    time.process_time() - cpu_before[0],
                    _cpu_seconds(backend) - cpu_before[1],
                )
            )
        (copied,) = conn.execute("SELECT count(*) FROM bench_copy").fetchone()
        conn.execute("DROP TABLE bench_copy")
        conn.commit()
    return timings, copied


def db_counts(args) -> tuple[int, int]:
    with psycopg.connect(bench_dsn(args)) as conn:
        (records,) = conn.execute("SELECT count(*) FROM chargeback_usagerecord").fetchone()
        (requests,) = conn.execute(
            "SELECT coalesce(sum(requests), 0) FROM chargeback_usagerolluphourly"
        ).fetchone()
    return records, int(requests)


def delete_warmup(args) -> None:
    with psycopg.connect(bench_dsn(args)) as conn:
        tenant = "(SELECT id FROM tenants_tenant WHERE slug = %s)"
        conn.execute(f"DELETE FROM chargeback_usagerecord WHERE tenant_id = {tenant}", [WARMUP_TENANT])
        conn.execute(f"DELETE FROM chargeback_usagerolluphourly WHERE tenant_id = {tenant}", [WARMUP_TENANT])
        conn.commit()
        conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------- import RSS


def import_command_exists(args) -> bool:
    result = subprocess.run(
        [PYTHON, "manage.py", "help", "import_usage"], cwd=ROOT, env=server_env(args), capture_output=True
    )
    return result.returncode == 0


def measure_import_rss(args, traces) -> None:
    n = args.import_n
    with tempfile.TemporaryDirectory(prefix="chargeback-bench-") as folder:
        path = Path(folder) / "usage.jsonl"
        encoder = msgspec.json.Encoder()
        with path.open("wb") as handle:
            for start in range(0, n, 100_000):
                chunk = make_records(
                    min(100_000, n - start), prefix=f"import-{start}-", seed=start + 7, traces=traces
                )
                handle.write(b"".join(encoder.encode(record) + b"\n" for record in chunk))
        size_mb = path.stat().st_size / 1e6
        before, _ = db_counts(args)
        command = [PYTHON, "manage.py", "import_usage", str(path)]
        print(f"\nimport_usage: {n:,} records, {size_mb:,.0f} MB JSONL: {' '.join(command[1:3])} FILE")
        # The peak is taken by GNU time, which forks the command from its own small process: the
        # ru_maxrss of a child forked from this script also counts this script's memory (the
        # records and bodies above) from the moment between fork and exec.
        gnu_time = shutil.which("time") or "/usr/bin/time"
        peak_file = Path(folder) / "peak-rss-kb"
        measured = (
            [gnu_time, "-f", "%M", "-o", str(peak_file), *command] if Path(gnu_time).is_file() else command
        )
        started = time.perf_counter()
        child = subprocess.Popen(
            measured, cwd=ROOT, env=server_env(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        after, _ = db_counts(args)
        if peak_file.is_file():
            peak_mb, how = int(peak_file.read_text().split()[-1]) / 1024, "GNU time"
        else:  # no GNU time: an upper bound (see above)
            peak_mb, how = usage.ru_maxrss / 1024, "ru_maxrss, includes this script's memory at fork"
    tail = output.decode(errors="replace").strip().splitlines()[-3:]
    print(f"  exit code          {child.returncode}" + (f"  ({' | '.join(tail)})" if tail else ""))
    print(
        f"  records stored     {after - before:,} in {elapsed:.1f} s ({(after - before) / elapsed:,.0f} records/s)"
    )
    print(
        f"  peak RSS           {peak_mb:,.0f} MB ({how}; target < 300 MB) -> {'OK' if peak_mb < 300 else 'OVER'}"
    )


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--records", type=int, default=200_000, help="records to ingest (200000)")
    parser.add_argument("--batch", type=int, default=5_000, help="records per request (5000)")
    add_server_arguments(parser, db="chargeback_bench")
    parser.add_argument("--concurrency", type=int, default=0, help="client connections (workers*threads+1)")
    rss = parser.add_mutually_exclusive_group()
    rss.add_argument("--import-rss", dest="import_rss", action="store_true", default=None,
                     help="measure import_usage peak RSS (default: if the command exists)")  # fmt: skip
    rss.add_argument("--no-import-rss", dest="import_rss", action="store_false")
    parser.add_argument(
        "--import-n", type=int, default=1_000_000, help="records in the import file (1000000)"
    )
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--copy-runs", type=int, default=3, help="COPY baseline runs; the best counts (3)")
    args = parser.parse_args()
    concurrency = args.concurrency or args.workers * args.threads + 1

    traces = load_traces()
    print(f"database {args.db}: recreating and migrating ...", flush=True)
    recreate_database(args)
    secret = create_tenants_and_key(args, [*TENANTS, (WARMUP_TENANT, "Bench warm-up", None, "team", None)])

    records = make_records(args.records, prefix="", seed=args.seed, traces=traces)
    encoder = msgspec.json.Encoder()
    bodies = [
        encoder.encode(records[start : start + args.batch]) for start in range(0, len(records), args.batch)
    ]
    warmup = make_records(500, prefix="warmup-", seed=1, traces=traces)
    for record in warmup:
        record["tenant"] = WARMUP_TENANT
    warmup_body = encoder.encode(warmup)
    del records, warmup

    port = free_port()
    server = start_server(args, port)
    try:
        # Warm every worker (imports, price caches, connections), then forget the warm-up rows.
        _, _, failures = post_batches(
            port, secret, [warmup_body] * (2 * args.workers * args.threads), concurrency
        )
        if failures:
            raise SystemExit(f"warm-up failed: {failures[:2]}")
        delete_warmup(args)

        print(
            f"ingest: {args.records:,} records in {len(bodies)} requests of {args.batch:,}, gunicorn -w {args.workers}"
            f"{f' --threads {args.threads}' if args.threads > 1 else ''}, {concurrency} client connections",
            flush=True,
        )
        load_before = os.getloadavg()[0]
        processes = _server_processes(server.pid, args.db)
        cpu_before = {pid: _cpu_seconds(pid) for pid in processes}
        busy_before = _machine_busy_seconds()
        elapsed, totals, failures = run_client(port, secret, bodies, concurrency)
        busy = _machine_busy_seconds() - busy_before
        processes.update(_server_processes(server.pid, args.db))  # a backend opened meanwhile
        ingest_cpu = {"gunicorn": 0.0, "postgres": 0.0}
        for pid, kind in processes.items():
            ingest_cpu[kind] += _cpu_seconds(pid) - cpu_before.get(pid, 0.0)
        ingest_rate = args.records / elapsed

        # Idempotency check (untimed): a resent batch must be all duplicates.
        _, resend, resend_failures = post_batches(port, secret, bodies[:1], 1)
    finally:
        stop_server(server)

    stored, rollup_requests = db_counts(args)
    copy_timings, copied = copy_baseline(args)
    copy_seconds, copy_client_cpu, copy_db_cpu = min(copy_timings)
    copy_rate = copied / copy_seconds
    ratio = ingest_rate / copy_rate if copy_rate else 0.0

    print(f"  ingest             {ingest_rate:>10,.0f} records/s  ({elapsed:.2f} s)")
    print(
        f"  plain COPY         {copy_rate:>10,.0f} rows/s     (best of {len(copy_timings)}: {copy_seconds:.2f} s; {copied:,} rows, binary;"
        f" runs {', '.join(f'{t[0]:.2f}' for t in copy_timings)} s)"
    )
    print(
        f"  ratio ingest/COPY  {ratio:>10.3f}  (target >= 0.5) -> {'OK' if ratio >= 0.5 else 'BELOW TARGET'}"
    )
    print(
        f"  answers            accepted {totals['accepted']:,}, duplicates {totals['duplicates']:,}, "
        f"conflicts {totals['conflicts']:,}, rejected {totals['rejected']:,}, unpriced {totals['unpriced']:,}"
    )
    print(
        f"  machine            load average {load_before:.2f} before the ingest, {os.getloadavg()[0]:.2f} after the COPYs"
        f" ({os.cpu_count()} CPUs; anything else running skews both figures)"
    )
    per_record = 1e6 / args.records
    ingest_total = ingest_cpu["gunicorn"] + ingest_cpu["postgres"] + totals["client_cpu"]
    print(
        f"  CPU per record     ingest {ingest_total * per_record:.0f} µs (gunicorn {ingest_cpu['gunicorn'] * per_record:.0f},"
        f" postgres {ingest_cpu['postgres'] * per_record:.0f}, client {totals['client_cpu'] * per_record:.0f});"
        f" COPY {(copy_client_cpu + copy_db_cpu) * 1e6 / copied:.0f} µs (client {copy_client_cpu * 1e6 / copied:.0f},"
        f" postgres {copy_db_cpu * 1e6 / copied:.0f})"
    )
    if busy:
        others = max(0.0, busy - ingest_total) / (elapsed * (os.cpu_count() or 1))
        print(f"  other processes    used {others:.0%} of the machine's CPU during the ingest")
    latencies = totals["latencies"]
    quarter = max(1, len(latencies) // 4)
    print(
        f"  request latency    median {statistics.median(latencies) * 1000:,.0f} ms, max {max(latencies) * 1000:,.0f} ms,"
        f" first quarter {statistics.mean(latencies[:quarter]) * 1000:,.0f} ms,"
        f" last quarter {statistics.mean(latencies[-quarter:]) * 1000:,.0f} ms"
    )
    print(f"  stored records     {stored:,} (expected {args.records:,})")
    print(f"  rollup requests    {rollup_requests:,} (expected {args.records:,})")
    first_batch = min(args.batch, args.records)
    print(
        f"  resend of batch 1  duplicates {resend['duplicates']:,} of {first_batch:,}, accepted {resend['accepted']}"
    )
    ok = (
        not failures
        and not resend_failures
        and stored == rollup_requests == totals["accepted"] == args.records
        and resend["duplicates"] == first_batch
        and resend["accepted"] == 0
    )
    if failures or resend_failures:
        print(f"  FAILURES: {(failures + resend_failures)[:3]}")
    print(f"  correctness        {'OK' if ok else 'FAILED'}")

    run_import = args.import_rss
    if run_import is None:
        run_import = import_command_exists(args)
        if not run_import:
            print("\nimport_usage: skipped (no `import_usage` management command yet)")
    if run_import:
        measure_import_rss(args, traces)

    finish_database(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
