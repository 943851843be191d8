"""Locks held by a test on its own PostgreSQL connection, to stop a worker process at a chosen
statement (and kill it there) without timing guesses."""

from contextlib import contextmanager

import psycopg
from django.db import connection

from tests.worker import wait_for


def _connect() -> psycopg.Connection:
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        user=settings.get("USER") or "postgres",
        host=settings.get("HOST") or "127.0.0.1",
        port=settings.get("PORT") or 5432,
        password=settings.get("PASSWORD") or None,
        autocommit=True,
    )


def _backends(sql: str, params) -> set[int]:
    with _connect() as probe:
        return {pid for (pid,) in probe.execute(sql, params).fetchall()}


@contextmanager
def locks_held(sql: str, params=()):
    """Run `sql` (SELECT ... FOR UPDATE, or an INSERT of a unique key) in a transaction of a separate
    connection and keep it open, so that whoever needs those rows or that key waits; yields a
    function that waits until someone does. On exit the transaction is rolled back, and the exit
    waits until the backends that were waiting have finished (their client may be dead: a backend
    goes on with the statement it was given, then notices)."""
    locker = _connect()
    waiters: set[int] = set()
    try:
        with locker.transaction():
            locker.execute(sql, params)

            def wait_for_waiter(lines=None, timeout: float = 60) -> None:
                def waiting() -> bool:
                    waiters.update(
                        _backends(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                            " AND wait_event_type = 'Lock' AND pid <> %s",
                            [locker.info.backend_pid],
                        )
                    )
                    return bool(waiters)

                wait_for(waiting, timeout=timeout, lines=lines)

            yield wait_for_waiter
            raise psycopg.Rollback
    finally:
        locker.close()
    if waiters:
        wait_for(
            lambda: not _backends("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(waiters)])
        )
