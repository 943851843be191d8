"""Per-API-key rate limits (DRF throttles), shared by every process.

A fixed window per key and scope: the key `<prefix>:ratelimit:<scope>:<key prefix>:<window>` is
INCRemented and given an expiry in one pipelined Redis round trip, and the request passes while
the count is within the limit. Fixed windows let a client send up to twice the limit around a
window's edge; that is the price of one round trip on the allowance check's hot path, and enough
to stop abuse. Without REDIS_URL the Django cache counts (the embedded default's file cache is
shared by the processes of one machine). When the counter cannot be reached the request passes:
a rate limiter must not take ingestion or the allowance check down with it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from django.core.cache import cache as shared_cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.throttling import BaseThrottle

from tenants.models import ApiKey

logger = logging.getLogger(__name__)

_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    requests: int
    seconds: int


@cache
def rate_parse(text: str) -> Rate | None:
    """ "600/min" -> Rate(600, 60) (periods second, minute, hour, day, by first letter, as DRF's
    rates); empty, "off" or "none" -> None (no limit)."""
    text = (text or "").strip().lower()
    if text in ("", "off", "none"):
        return None
    count, _, period = text.partition("/")
    seconds = _PERIOD_SECONDS.get(period.strip()[:1])
    if not count.strip().isdigit() or seconds is None:
        raise ValueError(f"A rate limit is '<count>/<second|minute|hour|day>', not {text!r}.")
    return Rate(int(count), seconds)


@cache
def _client(url: str) -> redis.Redis:
    # The allowance check's own budget: a dead Redis must cost a gateway milliseconds, not seconds.
    return redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)


def _now() -> float:
    return time.time()


def rate_limit_hit(*, scope: str, client_id: str, rate: Rate, now: float) -> tuple[int, float] | None:
    """Count one request of `client_id` in the current window of `rate`; returns the count so far
    in the window and the seconds until the window ends, or None when the counter is unavailable."""
    window = int(now // rate.seconds)
    key = f"{settings.REDIS_KEY_PREFIX}:ratelimit:{scope}:{client_id}:{rate.seconds}:{window}"
    remaining = (window + 1) * rate.seconds - now
    try:
        if settings.REDIS_URL:
            pipeline = _client(settings.REDIS_URL).pipeline(transaction=False)
            pipeline.incr(key)
            pipeline.expire(key, rate.seconds + 1)
            count, _ = pipeline.execute()
        else:
            shared_cache.add(key, 0, timeout=rate.seconds + 1)
            count = shared_cache.incr(key)
    except (redis.RedisError, OSError, ValueError) as error:
        logger.warning("rate limit %s not counted (%s); the request passes", scope, error)
        return None
    return int(count), remaining


class ApiKeyRateThrottle(BaseThrottle):
    """Limits requests per API key by the rate in the setting named `rate_setting`; only methods in
    `methods` count (a list endpoint's GET beside an ingesting POST is not limited)."""

    scope = ""
    rate_setting = ""
    methods: tuple[str, ...] = ("POST",)

    def __init__(self):
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        if request.method not in self.methods:
            return True
        api_key = request.auth
        rate = rate_parse(getattr(settings, self.rate_setting))
        if rate is None or not isinstance(api_key, ApiKey):
            return True  # unauthenticated requests were refused before throttling
        # The key's prefix, not its id: ids can be reused (SQLite), prefixes are random and unique.
        hit = rate_limit_hit(scope=self.scope, client_id=api_key.prefix, rate=rate, now=_now())
        if hit is None or hit[0] <= rate.requests:
            return True
        self._wait = hit[1]
        return False

    def wait(self) -> float | None:
        return None if self._wait is None else max(1, math.ceil(self._wait))


class IngestRateThrottle(ApiKeyRateThrottle):
    """POST /api/v1/usage/, /v1/traces and the LiteLLM callback, together: INGEST_RATE_LIMIT."""

    scope = "ingest"
    rate_setting = "INGEST_RATE_LIMIT"


class AllowanceRateThrottle(ApiKeyRateThrottle):
    """POST /api/v1/allowance/: ALLOWANCE_RATE_LIMIT."""

    scope = "allowance"
    rate_setting = "ALLOWANCE_RATE_LIMIT"


# For the OpenAPI schema of throttled views: the 429 answer's header.
RETRY_AFTER_HEADER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429],
    description="Seconds until this API key may send again (with 429 `rate_limited`).",
)
