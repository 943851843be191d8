"""Budget spend counters in Redis: incremented at ingest, read by the allowance check in one round
trip, reconciled from the database periodically so that they cannot drift.

Keys are per budget and period key, so a new period simply starts a new key: nothing is reset.
"""

from functools import cache

import redis
from django.conf import settings


class CountersUnavailable(Exception):
    """Redis is not configured, or did not answer in time."""


@cache
def _client(url: str) -> redis.Redis:
    # Short timeouts: a gateway waiting on the allowance check must not hang on a dead Redis.
    return redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)


def counters_client() -> redis.Redis:
    if not settings.REDIS_URL:
        raise CountersUnavailable("REDIS_URL is not set")
    return _client(settings.REDIS_URL)


def counters_enabled() -> bool:
    return bool(settings.REDIS_URL)


def counter_key(budget_id: int, period_key: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:budget:{budget_id}:{period_key}"


def _reconciled_key() -> str:
    return f"{settings.REDIS_KEY_PREFIX}:budget-counters-reconciled"


def counters_add(deltas: dict[str, int], expire_at: dict[str, int]) -> None:
    """INCRBY each key by its delta (nanos) and let it expire after its period."""
    try:
        pipeline = counters_client().pipeline(transaction=False)
        for key, delta in deltas.items():
            pipeline.incrby(key, delta)
            pipeline.expireat(key, expire_at[key])
        pipeline.execute()
    except redis.RedisError as error:
        raise CountersUnavailable(str(error)) from error


def counters_read(keys: list[str]) -> tuple[list[int | None], bool]:
    """Values of the keys (None where missing) and whether a reconciliation ran recently, in one
    round trip."""
    if not keys:
        return [], True
    try:
        values = counters_client().mget([*keys, _reconciled_key()])
    except redis.RedisError as error:
        raise CountersUnavailable(str(error)) from error
    return [None if value is None else int(value) for value in values[:-1]], values[-1] is not None


def counters_set(values: dict[str, int], expire_at: dict[str, int], *, only_missing: bool = False) -> None:
    try:
        pipeline = counters_client().pipeline(transaction=False)
        for key, value in values.items():
            pipeline.set(key, value, exat=expire_at[key], nx=only_missing)
        pipeline.execute()
    except redis.RedisError as error:
        raise CountersUnavailable(str(error)) from error


def counters_mark_reconciled(ttl_seconds: int) -> None:
    try:
        counters_client().set(_reconciled_key(), 1, ex=ttl_seconds)
    except redis.RedisError as error:
        raise CountersUnavailable(str(error)) from error
