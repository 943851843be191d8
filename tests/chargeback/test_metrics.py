"""/metrics: parsed with prometheus_client's own parser, its totals equal /api/v1/costs/."""

import itertools
import json
import os
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from django.core.cache import cache
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families

from budgets.selectors import budget_status
from chargeback import metrics
from chargeback.costs import latency_quantile_ms
from chargeback.ingest_counters import ingest_counters_key
from chargeback.models import LATENCY_BUCKET_BOUNDS_MS, UsageRecord
from tests.chargeback.helpers import usage_record
from tests.factories import BudgetFactory, TenantFactory

pytestmark = pytest.mark.django_db
REDIS_URL = os.environ.get("REDIS_URL", "")
USAGE_URL = "/api/v1/usage/"
COSTS_URL = "/api/v1/costs/"
WINDOW = {"start": "2026-03-01", "end": "2026-04-01", "tz": "UTC", "granularity": "total"}


@pytest.fixture(autouse=True)
def fresh_metrics(settings):
    """Every scrape computed afresh, and the run's ingest counters emptied (Redis outlives tests)."""
    settings.METRICS_CACHE_SECONDS = 0
    settings.METRICS_TOKEN = ""
    for accept in ("", "application/openmetrics-text"):
        cache.delete(metrics.metrics_cache_key(choose_encoder(accept)[1]))
    if REDIS_URL:
        redis.Redis.from_url(REDIS_URL).delete(ingest_counters_key())


@pytest.fixture
def usage(client_for, django_capture_on_commit_callbacks):
    org_a = TenantFactory(slug="org-a", kind="organization")
    team = TenantFactory(slug="team-a", parent=org_a)
    TenantFactory(slug="project-a", parent=team)
    TenantFactory(slug="org-b", kind="organization")
    records = [
        usage_record("1", tenant="org-a", latency_ms=40),
        usage_record("2", tenant="team-a", model="gpt-4o-mini", latency_ms=1200, cached_input_tokens=1000),
        usage_record("3", tenant="project-a", status="error", latency_ms=65_000, reasoning_tokens=100),
        usage_record("4", tenant="project-a", provider="x", model="mystery", latency_ms=None),  # unpriced
        usage_record(
            "5", tenant="org-b", provider="anthropic", model="claude-sonnet-4-5", cache_write_tokens=200
        ),
        usage_record("6", tenant="org-b", timestamp="2026-03-31T23:59:59Z", latency_ms=2500),
        usage_record("7", tenant="no-such-tenant"),  # rejected
        {**usage_record("8"), "input_tokens": -1, "tenant": "org-a"},  # rejected
    ]
    client = client_for(None, scopes=["ingest", "read"])
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(USAGE_URL, data=json.dumps(records), content_type="application/json").json()
        # A resend: one duplicate, one conflict (same event id, different payload).
        resend = [records[0], {**records[1], "output_tokens": 301}]
        second = client.post(USAGE_URL, data=json.dumps(resend), content_type="application/json").json()
    assert (first["accepted"], first["rejected"]) == (6, 2)
    assert (second["duplicates"], second["conflicts"]) == (1, 1)
    return client


def _scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    families = text_string_to_metric_families(response.content.decode())
    return {family.name: family for family in families}


def _samples(family, name=None, **labels):
    return [
        sample
        for sample in family.samples
        if (name is None or sample.name == name) and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def test_cost_tokens_and_requests_equal_the_costs_api(usage, api_client):
    scraped = _scrape(api_client)
    for root in ("org-a", "org-b"):
        answer = usage.get(COSTS_URL, {**WINDOW, "tenant": root, "group_by": "provider,model"}).json()
        assert answer["rows"]
        for row in answer["rows"]:
            labels = {"provider": row["group"]["provider"], "model": row["group"]["model"], "tenant": root}
            (cost,) = _samples(scraped["llm_cost_usd"], "llm_cost_usd_total", **labels)
            assert Decimal(repr(cost.value)) == pytest.approx(Decimal(row["cost_usd"]), abs=Decimal("1e-12"))
            tokens = {
                sample.labels["token_type"]: sample.value
                for sample in _samples(scraped["llm_tokens"], "llm_tokens_total", **labels)
            }
            assert tokens["uncached_input"] == row["uncached_input_tokens"]
            assert tokens["cached_input"] == row["cached_input_tokens"]
            assert tokens["cache_write"] == row["cache_write_tokens"]
            assert tokens["non_reasoning_output"] + tokens["reasoning_output"] == row["output_tokens"]
            assert tokens["reasoning_output"] == row["reasoning_tokens"]
            assert sum(tokens.values()) == row["total_tokens"]
            requests = {
                sample.labels["status"]: sample.value
                for sample in _samples(scraped["llm_requests"], "llm_requests_total", **labels)
            }
            assert sum(requests.values()) == row["requests"]
            assert requests.get("error", 0) == row["errors"]
            (unpriced,) = _samples(scraped["llm_unpriced_requests"], "llm_unpriced_requests_total", **labels)
            assert unpriced.value == row["unpriced_requests"]
            # The histogram is the rollups' own: its quantile equals the API's p95.
            buckets = _samples(
                scraped["llm_request_duration_seconds"], "llm_request_duration_seconds_bucket", **labels
            )
            cumulative = [
                sample.value for sample in sorted(buckets, key=lambda sample: float(sample.labels["le"]))
            ]
            counts = [int(cumulative[0])] + [int(b - a) for a, b in itertools.pairwise(cumulative)]
            p95 = latency_quantile_ms(counts, 0.95)
            assert row["latency_p95_ms"] == (None if p95 is None else round(p95, 1))
    total_cost = sum(sample.value for sample in _samples(scraped["llm_cost_usd"], "llm_cost_usd_total"))
    everything = usage.get(COSTS_URL, WINDOW).json()["totals"]
    assert total_cost == pytest.approx(float(Decimal(everything["cost_usd"])), rel=1e-12)


def test_latency_histogram_counts_the_calls_that_reported_a_latency(usage, api_client):
    family = _scrape(api_client)["llm_request_duration_seconds"]
    count = sum(sample.value for sample in _samples(family, "llm_request_duration_seconds_count"))
    assert count == UsageRecord.objects.filter(latency_ms__isnull=False).count() == 5
    seconds = sum(sample.value for sample in _samples(family, "llm_request_duration_seconds_sum"))
    assert seconds == pytest.approx((40 + 1200 + 65_000 + 850 + 2500) / 1000)
    bounds = {sample.labels["le"] for sample in _samples(family, "llm_request_duration_seconds_bucket")}
    assert bounds == {*(str(bound / 1000) for bound in LATENCY_BUCKET_BOUNDS_MS), "+Inf"}
    (over_a_minute,) = _samples(family, "llm_request_duration_seconds_bucket", le="60.0", tenant="org-a",
                                model="gpt-4o", provider="openai")  # fmt: skip
    (all_of_them,) = _samples(family, "llm_request_duration_seconds_bucket", le="+Inf", tenant="org-a",
                              model="gpt-4o", provider="openai")  # fmt: skip
    assert (over_a_minute.value, all_of_them.value) == (1, 2)  # 40 ms and 65 s


def test_tenant_labels_are_top_level_tenants_only(usage, api_client):
    scraped = _scrape(api_client)
    tenants = {
        sample.labels["tenant"]
        for name in ("llm_cost_usd", "llm_tokens", "llm_requests", "llm_request_duration_seconds")
        for sample in scraped[name].samples
    }
    assert tenants == {"org-a", "org-b"}
    for family in scraped.values():
        for sample in family.samples:
            assert not {"user", "event_id", "trace_id", "key"} & set(sample.labels)


@pytest.mark.skipif(not REDIS_URL, reason="needs a Redis server: set REDIS_URL (CI does)")
def test_ingest_counters_by_source_and_result_from_redis(usage, api_client, settings):
    settings.REDIS_URL = REDIS_URL
    family = _scrape(api_client)["llm_ingest_records"]
    counts = {
        (sample.labels["source"], sample.labels["result"]): sample.value
        for sample in _samples(family, "llm_ingest_records_total")
    }
    assert counts == {
        ("api", "accepted"): 6,
        ("api", "duplicate"): 1,
        ("api", "conflict"): 1,
        ("api", "rejected"): 2,
    }


def test_without_redis_accepted_records_are_counted_from_the_database(usage, api_client, settings):
    settings.REDIS_URL = ""
    family = _scrape(api_client)["llm_ingest_records"]
    counts = {
        (sample.labels["source"], sample.labels["result"]): sample.value
        for sample in _samples(family, "llm_ingest_records_total")
    }
    assert counts == {("api", "accepted"): 6}


def test_budget_utilisation_is_the_budget_status(usage, api_client):
    org_a = TenantFactory(slug="org-a")
    budget = BudgetFactory(
        tenant=org_a,
        name="march",
        period="fixed",
        fixed_start=datetime(2026, 3, 1, tzinfo=UTC),
        fixed_end=datetime(2026, 4, 1, tzinfo=UTC),
        amount_nanos=10**7,  # $0.01
    )
    BudgetFactory(tenant=org_a, name="switched off", is_active=False)
    family = _scrape(api_client)["llm_budget_utilisation_ratio"]
    (sample,) = family.samples
    assert sample.labels == {"budget": "march", "budget_id": str(budget.pk), "tenant": "org-a"}
    status = budget_status(budget, datetime(2026, 11, 1, tzinfo=UTC))
    assert sample.value == pytest.approx(status["spent_nanos"] / budget.amount_nanos)
    # ... which is the costs API's figure for the tenant's subtree in that range.
    spent = usage.get(COSTS_URL, {**WINDOW, "tenant": "org-a"}).json()["totals"]["cost_usd"]
    assert sample.value == pytest.approx(float(Decimal(spent) / Decimal("0.01")))
    assert sample.value > 0


def test_a_metrics_token_is_required_when_set(usage, api_client, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    response = api_client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert api_client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert api_client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200


def test_openmetrics_is_served_to_scrapers_that_ask_for_it(usage, api_client):
    response = api_client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_scrapes_share_one_answer_for_the_cache_period(
    usage, api_client, settings, django_capture_on_commit_callbacks
):
    settings.METRICS_CACHE_SECONDS = 60
    first = api_client.get("/metrics").content
    with django_capture_on_commit_callbacks(execute=True):
        usage.post(
            USAGE_URL,
            data=json.dumps([usage_record("late", tenant="org-b")]),
            content_type="application/json",
        )
    assert api_client.get("/metrics").content == first
    settings.METRICS_CACHE_SECONDS = 0
    assert api_client.get("/metrics").content != first


def test_a_failing_metric_family_does_not_cost_the_others(usage, api_client, monkeypatch):
    def broken():
        raise RuntimeError("insights is down")

    monkeypatch.setattr(metrics, "_metric_families", [broken, *metrics._metric_families])
    assert "llm_cost_usd" in _scrape(api_client)
