"""Per-key rate limits on ingestion (usage, OTLP, LiteLLM together) and on the allowance check:
429 `rate_limited` with Retry-After, counted in Redis so that every process shares the count."""

import json

import pytest
import redis
from django.conf import settings as django_settings

from chargeback import throttling
from chargeback.throttling import Rate, rate_parse
from tenants.models import ApiKey
from tests.chargeback.helpers import usage_record
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

# A fixed clock, 30 s into a minute: windows and Retry-After are exact, whatever the real time.
NOW = 1_800_000_030.0


@pytest.fixture
def clock(monkeypatch):
    current = {"now": NOW}
    monkeypatch.setattr(throttling, "_now", lambda: current["now"])
    return current


@pytest.fixture
def team():
    return TenantFactory(slug="team")


def _ingest(client, event_id="e1"):
    return client.post("/api/v1/usage/", [usage_record(event_id)], format="json")


def _otlp(client):
    return client.post("/v1/traces", b'{"resourceSpans": []}', content_type="application/json")


def _litellm(client):
    return client.post("/api/v1/integrations/litellm/", b"[]", content_type="application/json")


def _allowance(client):
    return client.post("/api/v1/allowance/", {"estimated_cost_usd": "0.01"}, format="json")


def test_ingestion_over_the_limit_is_a_429_with_retry_after(client_for, team, settings, clock):
    settings.INGEST_RATE_LIMIT = "2/min"
    client = client_for(team, scopes=["ingest", "read"])
    assert [_ingest(client, f"e{index}").status_code for index in range(2)] == [200, 200]
    refused = _ingest(client, "e2")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "30"
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert "retry in 30 s" in error["message"]
    # Reading is not ingestion: the list is not limited.
    assert client.get("/api/v1/usage/").status_code == 200
    # The next window lets the key in again.
    clock["now"] += 60
    assert _ingest(client, "e3").status_code == 200


def test_each_key_has_its_own_count(client_for, team, settings, clock):
    settings.INGEST_RATE_LIMIT = "1/min"
    first, second = client_for(team, scopes=["ingest"]), client_for(team, scopes=["ingest"])
    assert _ingest(first, "a").status_code == 200
    assert _ingest(first, "b").status_code == 429
    assert _ingest(second, "c").status_code == 200


def test_the_ingestion_endpoints_share_one_limit(client_for, team, settings, clock):
    settings.INGEST_RATE_LIMIT = "2/min"
    client = client_for(team, scopes=["ingest"])
    assert _ingest(client).status_code == 200
    assert _otlp(client).status_code == 200
    refused = _litellm(client)
    assert (refused.status_code, refused.json()["error"]["code"], refused["Retry-After"]) == (
        429,
        "rate_limited",
        "30",
    )
    # OTLP answers in its own error format, with our code in a header.
    otlp = _otlp(client)
    assert otlp.status_code == 429
    assert (otlp["X-Chargeback-Error-Code"], otlp["Retry-After"]) == ("rate_limited", "30")
    assert json.loads(otlp.content)["code"] == 8  # RESOURCE_EXHAUSTED


def test_the_allowance_check_has_its_own_limit(client_for, team, settings, clock):
    settings.ALLOWANCE_RATE_LIMIT = "3/min"
    settings.INGEST_RATE_LIMIT = "1/min"
    client = client_for(team, scopes=["ingest", "read"])
    assert [_allowance(client).status_code for _ in range(3)] == [200, 200, 200]
    refused = _allowance(client)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate_limited")
    assert _ingest(client).status_code == 200  # a separate count


def test_the_count_is_shared_through_redis(client_for, team, settings, clock):
    """Another process (here: another connection) counting the same key and window shares the limit."""
    if not django_settings.REDIS_URL:
        pytest.skip("needs REDIS_URL (the count then lives in the cache)")
    settings.ALLOWANCE_RATE_LIMIT = "5/min"
    client = client_for(team, scopes=["read"])
    assert _allowance(client).status_code == 200
    other_process = redis.Redis.from_url(django_settings.REDIS_URL)
    prefix = ApiKey.objects.get(tenant=team).prefix
    [key] = other_process.keys(f"{django_settings.REDIS_KEY_PREFIX}:ratelimit:allowance:{prefix}:*")
    assert int(other_process.get(key)) == 1
    assert 0 < other_process.ttl(key) <= 61  # it cleans itself up
    other_process.incrby(key, 4)
    assert _allowance(client).status_code == 429


def test_without_redis_the_cache_counts(client_for, team, settings, clock):
    settings.REDIS_URL = ""
    settings.ALLOWANCE_RATE_LIMIT = "1/min"
    client = client_for(team, scopes=["read"])
    assert _allowance(client).status_code == 200
    assert _allowance(client).status_code == 429


def test_when_the_counter_is_unreachable_requests_pass(client_for, team, settings, clock, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.INGEST_RATE_LIMIT = "1/min"
    client = client_for(team, scopes=["ingest"])
    assert [_ingest(client, f"e{index}").status_code for index in range(3)] == [200, 200, 200]
    assert "rate limit ingest not counted" in caplog.text


def test_an_empty_limit_switches_it_off(client_for, team, settings, clock):
    settings.ALLOWANCE_RATE_LIMIT = ""
    client = client_for(team, scopes=["read"])
    assert {_allowance(client).status_code for _ in range(5)} == {200}


@pytest.mark.parametrize(
    ("text", "rate"),
    [("600/min", Rate(600, 60)), ("10/s", Rate(10, 1)), ("5/hour", Rate(5, 3600)), ("1/day", Rate(1, 86400)),
     ("", None), ("off", None)],
)  # fmt: skip
def test_rates_parse(text, rate):
    assert rate_parse(text) == rate


@pytest.mark.parametrize("text", ["600", "x/min", "10/fortnight", "-1/min"])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError, match="rate limit"):
        rate_parse(text)
