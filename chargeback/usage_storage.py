"""Writing priced usage rows and their hourly rollups: a COPY fast path on PostgreSQL, plain
INSERTs on SQLite. Both return the keys they actually inserted, so the caller can tell new rows
from resends; both run inside the caller's transaction.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

import msgspec
import psycopg
from django.db import IntegrityError, connection, transaction
from psycopg import errors, postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format

from chargeback.hooks import IngestedRecord
from chargeback.models import LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKET_FIELDS, UsageRecord, UsageRollupHourly
from tenants.models import Tenant

# Column order of a usage row tuple, as built by the ingestion service.
USAGE_COLUMNS = (
    "tenant_id",
    "event_id",
    "payload_hash",
    "occurred_at",
    "ingested_at",
    "provider",
    "model",
    "model_id",
    "uncached_input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "latency_ms",
    "status",
    "tags",  # a dict of strings
    "list_cost_nanos",
    "cost_nanos",
    "reported_cost_nanos",
    "pricing_source",
    "price_version",
    "source",
    "cache_write_1h_tokens",
    "prompt_hash",
)
_COLUMN_INDEX = {name: index for index, name in enumerate(USAGE_COLUMNS)}
_POSTGRES_TYPES = (
    "bigint", "text", "text", "timestamptz", "timestamptz", "text", "text", "text",
    "bigint", "bigint", "bigint", "bigint", "bigint", "integer", "text", "jsonb",
    "bigint", "bigint", "bigint", "text", "text", "text", "bigint", "text",
)  # fmt: skip
_USAGE_TABLE = UsageRecord._meta.db_table
_ROLLUP_TABLE = UsageRollupHourly._meta.db_table

ROLLUP_KEY_COLUMNS = ("tenant_id", "hour", "provider", "model", "feature", "status")
ROLLUP_SUM_COLUMNS = (
    "requests",
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
_FIRST_BUCKET = ROLLUP_SUM_COLUMNS.index(LATENCY_BUCKET_FIELDS[0])
_TOKEN_COLUMNS = (
    "uncached_input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)

UsageKey = tuple[int, str]
_usage_key = operator.itemgetter(0, 1)  # a usage row's (tenant_id, event_id)


class TenantGoneError(IntegrityError):
    """A batch's tenant was deleted after the batch was validated."""


def usage_tenants_lock(tenant_ids: set[int]) -> set[int]:
    """What the foreign key's check would do for every row, once per batch: lock the batch's
    tenants (KEY SHARE, on PostgreSQL) until the transaction ends, so that no one deletes them
    meanwhile; return those that no longer exist. SQLite writers are serialised by the ingest
    transaction itself."""
    if not tenant_ids:
        return set()
    placeholders = ", ".join(["%s"] * len(tenant_ids))
    lock = " FOR KEY SHARE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {Tenant._meta.db_table} WHERE id IN ({placeholders}) ORDER BY id{lock}",
            list(tenant_ids),
        )
        return tenant_ids - {tenant_id for (tenant_id,) in cursor.fetchall()}


def usage_rows_store(rows: Sequence[tuple]) -> set[UsageKey]:
    """Insert the rows whose (tenant, event_id) is new and add exactly those to the hourly rollups;
    return the keys that were NOT inserted because they are already stored (usually none). Rows are
    tuples in USAGE_COLUMNS order, with distinct keys."""
    if not rows:
        return set()
    missing = usage_tenants_lock({row[0] for row in rows})
    if missing:
        raise TenantGoneError(f"tenants {sorted(missing)} no longer exist")
    if connection.vendor == "postgresql":
        return _store_postgresql(rows)
    inserted = _insert_generic(rows)
    rollups = RollupAccumulator()
    for row in rows:
        if (row[0], row[1]) in inserted:
            rollups.add_row(row)
    rollups_upsert(rollups.deltas)
    return {(row[0], row[1]) for row in rows} - inserted


_LATENCY_BOUNDS_SQL = f"ARRAY[{', '.join(str(bound) for bound in LATENCY_BUCKET_BOUNDS_MS)}]"
# What the INSERT ... RETURNING gives back of each new row: what its rollup needs, with the rollup
# key parts and the latency bucket computed once per row. bisect_left(bounds, latency), the Python
# bucket, is how many bounds are below latency, i.e. at most latency - 1.
_RETURNED = (
    "tenant_id",
    "event_id",
    "date_trunc('hour', occurred_at, 'UTC') AS hour",
    "provider",
    "model_id",
    "coalesce(tags->>'feature', '') AS feature",
    "status",
    *_TOKEN_COLUMNS,
    "latency_ms",
    f"width_bucket(latency_ms - 1, {_LATENCY_BOUNDS_SQL}) AS latency_bucket",
    "list_cost_nanos",
    "cost_nanos",
)


_ROLLUP_UPDATES = ", ".join(
    f"{name} = {_ROLLUP_TABLE}.{name} + excluded.{name}" for name in ROLLUP_SUM_COLUMNS
)
_ROLLUP_CONFLICT = f" ON CONFLICT ({', '.join(ROLLUP_KEY_COLUMNS)}) DO UPDATE SET {_ROLLUP_UPDATES}"
_ROLLUP_COLUMN_LIST = ", ".join((*ROLLUP_KEY_COLUMNS, *ROLLUP_SUM_COLUMNS))


def _rollup_from_inserted_sql() -> str:
    """The rollup upsert of the rows an INSERT ... RETURNING gave back (the CTE `inserted`), summed in
    SQL exactly as RollupAccumulator sums them in Python."""
    sums = [
        "count(*)",
        "count(*) FILTER (WHERE cost_nanos IS NULL)",
        *(f"sum({name})" for name in _TOKEN_COLUMNS),
        "coalesce(sum(list_cost_nanos) FILTER (WHERE cost_nanos IS NOT NULL), 0)",
        "coalesce(sum(cost_nanos), 0)",
        "count(latency_ms)",
        "coalesce(sum(latency_ms), 0)",
        *(f"count(*) FILTER (WHERE latency_bucket = {index})" for index in range(len(LATENCY_BUCKET_FIELDS))),
    ]
    keys = "tenant_id, hour, provider, model_id, feature, status"
    return (
        f"INSERT INTO {_ROLLUP_TABLE} ({_ROLLUP_COLUMN_LIST})"
        f" SELECT {keys}, {', '.join(sums)} FROM inserted GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
        + _ROLLUP_CONFLICT
    )


_STAGING_COLUMNS = ", ".join(
    f"{name} {kind}" for name, kind in zip(USAGE_COLUMNS, _POSTGRES_TYPES, strict=True)
)
# One round trip: insert the new rows (sorted, so that concurrent batches with overlapping keys lock
# them in the same order), sum exactly those into the rollups (in key order, for the same reason),
# and return the keys that were not inserted (only those, as new rows are the common case).
_STORE_SQL = (
    f"WITH inserted AS (INSERT INTO {_USAGE_TABLE} ({', '.join(USAGE_COLUMNS)})"
    f" SELECT {', '.join(USAGE_COLUMNS)}"
    " FROM usage_staging ORDER BY tenant_id, event_id ON CONFLICT (tenant_id, event_id) DO NOTHING"
    f" RETURNING {', '.join(_RETURNED)}),"
    f" rolled AS ({_rollup_from_inserted_sql()})"
    " SELECT tenant_id, event_id FROM usage_staging EXCEPT ALL SELECT tenant_id, event_id FROM inserted"
)


# Tags are stored with sorted keys, as in the payload hash.
encode_tags = msgspec.json.Encoder(order="sorted").encode


class _TagsJsonbDumper(Dumper):
    """jsonb in binary COPY from a dict of strings: the format's version byte, then the JSON."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: dict[str, str]) -> bytes:
        return b"\x01" + encode_tags(obj)


_COPY = f"COPY {{table}} ({', '.join(USAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"


def _server_cursor() -> psycopg.Cursor:
    """A psycopg cursor on Django's connection that binds parameters on the server (in binary with
    %b): Django's client-side cursor quotes each element of a big array into the SQL text."""
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def _store_postgresql(rows: Sequence[tuple]) -> set[UsageKey]:
    """The common case, every key new, at the speed of COPY: COPY the rows straight into the table
    and sum them into the rollups in Python. When a key is stored already (a resend, or a
    concurrent batch with the same key), the COPY fails on the unique index; the savepoint undoes
    it, and the staging path's INSERT ... ON CONFLICT decides row by row. Checking the keys first
    instead cost every batch an index probe per row to spare the rare resend one failed COPY."""
    rows = sorted(rows, key=_usage_key)  # one lock order for concurrent batches
    with _server_cursor() as cursor:
        cursor.adapters.register_dumper(None, _TagsJsonbDumper)
        try:
            with transaction.atomic(), cursor.copy(_COPY.format(table=_USAGE_TABLE)) as copy:
                copy.set_types(_POSTGRES_TYPES)
                for row in rows:
                    copy.write_row(row)
        except (errors.UniqueViolation, errors.DeadlockDetected):
            return _store_staged(cursor, rows)
    rollups = RollupAccumulator()
    for row in rows:
        rollups.add_row(row)
    rollups_upsert(rollups.deltas)
    return set()


def _store_staged(cursor, rows: Sequence[tuple]) -> set[UsageKey]:
    """Insert through a staging table with ON CONFLICT DO NOTHING, rollups summed in SQL from what
    was inserted; returns the keys that were stored already."""
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS usage_staging ({_STAGING_COLUMNS}) ON COMMIT DELETE ROWS"
    )
    cursor.execute("TRUNCATE usage_staging")
    with cursor.copy(_COPY.format(table="usage_staging")) as copy:
        copy.set_types(_POSTGRES_TYPES)
        for row in rows:
            copy.write_row(row)
    cursor.execute(_STORE_SQL)
    return set(cursor.fetchall())


def _insert_generic(rows: Sequence[tuple]) -> set[UsageKey]:
    existing = {key for key, _ in usage_existing_hashes([(row[0], row[1]) for row in rows])}
    new_rows = sorted((row for row in rows if (row[0], row[1]) not in existing), key=_usage_key)
    adapt = connection.ops.adapt_datetimefield_value
    occurred, ingested = _COLUMN_INDEX["occurred_at"], _COLUMN_INDEX["ingested_at"]
    params = []
    for row in new_rows:
        values = list(row)
        values[occurred] = adapt(values[occurred])
        values[ingested] = adapt(values[ingested])
        values[_TAGS] = encode_tags(values[_TAGS]).decode()
        params.append(values)
    placeholders = ", ".join(["%s"] * len(USAGE_COLUMNS))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {_USAGE_TABLE} ({', '.join(USAGE_COLUMNS)}) VALUES ({placeholders})"
            " ON CONFLICT (tenant_id, event_id) DO NOTHING",
            params,
        )
    return {(row[0], row[1]) for row in new_rows}


def usage_existing_hashes(keys: Iterable[UsageKey]) -> list[tuple[UsageKey, str]]:
    """Stored payload hashes for these (tenant_id, event_id) keys."""
    by_tenant: dict[int, list[str]] = {}
    for tenant_id, event_id in keys:
        by_tenant.setdefault(tenant_id, []).append(event_id)
    found = []
    for tenant_id, event_ids in by_tenant.items():
        for start in range(0, len(event_ids), 5000):
            chunk = event_ids[start : start + 5000]
            rows = UsageRecord.objects.filter(tenant_id=tenant_id, event_id__in=chunk).values_list(
                "event_id", "payload_hash"
            )
            found.extend(((tenant_id, event_id), digest) for event_id, digest in rows)
    return found


def latency_bucket(latency_ms: int) -> int:
    return bisect.bisect_left(LATENCY_BUCKET_BOUNDS_MS, latency_ms)


_TAGS, _OCCURRED_AT, _PROVIDER, _MODEL_ID, _STATUS, _COST, _LIST_COST, _LATENCY = (
    _COLUMN_INDEX[name]
    for name in (
        "tags",
        "occurred_at",
        "provider",
        "model_id",
        "status",
        "cost_nanos",
        "list_cost_nanos",
        "latency_ms",
    )
)
# (position in the rollup sums, position in the usage row) of each token bucket.
_TOKEN_POSITIONS = tuple((2 + offset, _COLUMN_INDEX[name]) for offset, name in enumerate(_TOKEN_COLUMNS))


class IngestedRecords:
    """Stored usage rows as post-ingest hooks see them, an IngestedRecord each, made only when a
    hook iterates: most batches meet no hook that reads them (no budget in their tenants), and a
    tuple per record would cost every batch."""

    def __init__(self, rows: Sequence[tuple]):
        self.rows = rows

    def __iter__(self) -> Iterator[IngestedRecord]:
        for row in self.rows:
            yield IngestedRecord(
                row[0], row[_OCCURRED_AT], row[_PROVIDER], row[_MODEL_ID], row[_TAGS], row[_COST]
            )


class RollupAccumulator:
    """Sums usage rows into hourly rollup deltas, keyed like UsageRollupHourly."""

    def __init__(self):
        self.deltas: dict[tuple, list[int]] = {}

    def add(
        self,
        *,
        tenant_id: int,
        occurred_at: datetime,
        provider: str,
        model: str,
        feature: str,
        status: str,
        buckets: Sequence[int],
        latency_ms: int | None,
        list_cost_nanos: int | None,
        cost_nanos: int | None,
    ) -> None:
        hour = occurred_at.replace(minute=0, second=0, microsecond=0)
        key = (tenant_id, hour, provider, model, feature, status)
        sums = self.deltas.get(key)
        if sums is None:
            sums = self.deltas[key] = [0] * len(ROLLUP_SUM_COLUMNS)
        sums[0] += 1
        if cost_nanos is None:
            sums[1] += 1
        else:
            sums[7] += list_cost_nanos
            sums[8] += cost_nanos
        sums[2] += buckets[0]
        sums[3] += buckets[1]
        sums[4] += buckets[2]
        sums[5] += buckets[3]
        sums[6] += buckets[4]
        if latency_ms is not None:
            sums[9] += 1
            sums[10] += latency_ms
            sums[_FIRST_BUCKET + latency_bucket(latency_ms)] += 1

    def add_row(self, row: tuple) -> None:
        """Add one usage row tuple (USAGE_COLUMNS order). The same sums as
        `add`, written out again on purpose: this runs once per record on the PostgreSQL ingest
        path, where a shared helper's extra call and list per record showed in bench/ingest.py
        (ratios 0.456 and 0.458 with it, 0.526 and 0.493 without; noisy, but the margin is thin)."""
        key = (
            row[0],
            row[_OCCURRED_AT].replace(minute=0, second=0, microsecond=0),
            row[_PROVIDER],
            row[_MODEL_ID],
            row[_TAGS].get("feature", ""),
            row[_STATUS],
        )
        sums = self.deltas.get(key)
        if sums is None:
            sums = self.deltas[key] = [0] * len(ROLLUP_SUM_COLUMNS)
        sums[0] += 1
        cost_nanos = row[_COST]
        if cost_nanos is None:
            sums[1] += 1
        else:
            sums[7] += row[_LIST_COST]
            sums[8] += cost_nanos
        for position, column in _TOKEN_POSITIONS:
            sums[position] += row[column]
        latency_ms = row[_LATENCY]
        if latency_ms is not None:
            sums[9] += 1
            sums[10] += latency_ms
            sums[_FIRST_BUCKET + bisect.bisect_left(LATENCY_BUCKET_BOUNDS_MS, latency_ms)] += 1


# PostgreSQL: every delta in one statement, as one array per column.
_ROLLUP_UNNEST_SQL = (
    f"INSERT INTO {_ROLLUP_TABLE} ({_ROLLUP_COLUMN_LIST}) SELECT * FROM unnest("
    + ", ".join(
        ["%b::bigint[]", "%b::timestamptz[]", "%b::text[]", "%b::text[]", "%b::text[]", "%b::text[]"]
        + ["%b::bigint[]"] * len(ROLLUP_SUM_COLUMNS)
    )
    + ")"
    + _ROLLUP_CONFLICT
)


def rollups_upsert(deltas: dict[tuple, list[int]]) -> None:
    """Add deltas to the hourly rollups (creating rows as needed), in key order to avoid deadlocks."""
    if not deltas:
        return
    ordered = sorted(deltas.items())
    if connection.vendor == "postgresql":
        with _server_cursor() as cursor:
            columns = zip(*(key + tuple(sums) for key, sums in ordered), strict=True)
            cursor.execute(_ROLLUP_UNNEST_SQL, [list(column) for column in columns])
        return
    with connection.cursor() as cursor:
        adapt = connection.ops.adapt_datetimefield_value
        cursor.executemany(
            f"INSERT INTO {_ROLLUP_TABLE} ({_ROLLUP_COLUMN_LIST})"
            f" VALUES ({', '.join(['%s'] * (len(ROLLUP_KEY_COLUMNS) + len(ROLLUP_SUM_COLUMNS)))})"
            + _ROLLUP_CONFLICT,
            [[key[0], adapt(key[1]), *key[2:], *sums] for key, sums in ordered],
        )
