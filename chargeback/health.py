"""Liveness of the backing services, for /healthz and the demo script."""

import logging

from django.db import DatabaseError, connection

from chargeback.celery import app as celery_app

logger = logging.getLogger(__name__)


def database_check() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        # A dead connection must not stick: the next request reconnects.
        connection.close_if_unusable_or_obsolete()
        return {"ok": False, "vendor": connection.vendor, "error": str(error).strip()[:200]}
    return {"ok": True, "vendor": connection.vendor}


def broker_check(timeout_seconds: float = 2.0) -> dict:
    transport = celery_app.conf.broker_url.split("://", 1)[0]
    # The socket timeouts bound the check when the broker hangs (accepts, never answers): the retry
    # timeout alone only bounds connecting.
    bounded = {"socket_timeout": timeout_seconds, "socket_connect_timeout": timeout_seconds}
    try:
        with celery_app.connection_for_write(
            transport_options=bounded if transport.startswith(("redis", "rediss", "sentinel")) else None
        ) as broker:
            broker.ensure_connection(max_retries=1, timeout=timeout_seconds)
    except Exception as error:  # kombu raises transport-specific errors; any of them means "down"
        return {"ok": False, "transport": transport, "error": str(error).strip()[:200]}
    return {"ok": True, "transport": transport}


def service_health() -> dict:
    database = database_check()
    broker = broker_check()
    return {
        "status": "ok" if database["ok"] and broker["ok"] else "degraded",
        "database": database,
        "broker": broker,
    }
