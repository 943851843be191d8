"""Counters of ingestion results by source (accepted, duplicate, conflict, rejected), for /metrics.

Every web process ingests, and a scrape reaches any one of them, so the counters cannot live in a
process: they are fields of one Redis hash, incremented with one HINCRBY pipeline per batch after
it commits, and read with one HGETALL per scrape.

Without Redis (the embedded single-machine default) nothing is counted here; /metrics then
counts accepted records from the stored records (by their `source`) and exports no duplicate,
conflict or rejected counts. Counting is best effort: a Redis error is logged and never fails
ingestion (a lost increment shows as a slightly low counter, never as lost usage).
"""

import logging
from functools import cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

INGEST_RESULTS = ("accepted", "duplicate", "conflict", "rejected")


@cache
def _client(url: str) -> redis.Redis:
    # Short timeouts: ingestion must not wait on a slow Redis for a metric.
    return redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)


def ingest_counters_enabled() -> bool:
    return bool(settings.REDIS_URL)


def ingest_counters_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}:ingest-records"


def ingest_counters_add(source: str, counts: dict[str, int]) -> None:
    """Add one batch's counts ({result: count}, results from INGEST_RESULTS) for the source."""
    if not settings.REDIS_URL:
        return
    increments = {f"{source}:{result}": count for result, count in counts.items() if count}
    if not increments:
        return
    try:
        pipeline = _client(settings.REDIS_URL).pipeline(transaction=False)
        for field, count in increments.items():
            pipeline.hincrby(ingest_counters_key(), field, count)
        pipeline.execute()
    except redis.RedisError as error:
        logger.warning("ingest counters not updated (%s): %s", source, error)


def ingest_counters_read() -> dict[tuple[str, str], int] | None:
    """{(source, result): count}, or None when Redis is not configured or does not answer."""
    if not settings.REDIS_URL:
        return None
    try:
        values = _client(settings.REDIS_URL).hgetall(ingest_counters_key())
    except redis.RedisError as error:
        logger.warning("ingest counters unreadable: %s", error)
        return None
    counts = {}
    for field, value in values.items():
        source, _, result = field.decode().partition(":")
        counts[(source, result)] = int(value)
    return counts
