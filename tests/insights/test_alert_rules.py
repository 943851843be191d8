from datetime import timedelta
from decimal import Decimal

import pytest

from budgets.models import NotificationDelivery
from insights.models import AlertRule, AlertRuleEvent
from insights.selectors import latency_quantile, metric_value
from insights.services import alert_rule_evaluate, alert_rules_evaluate_all
from tests.factories import NotificationChannelFactory, TenantFactory
from tests.insights.conftest import NOW, record

pytestmark = pytest.mark.django_db
HOUR = NOW.replace(minute=0)


def test_a_static_rule_fires_once_per_breach_and_resolves(ingest, django_capture_on_commit_callbacks):
    tenant = TenantFactory(slug="team")
    NotificationChannelFactory(tenant=tenant)
    rule = AlertRule.objects.create(
        tenant=tenant,
        name="search budget",
        metric="cost",
        window="day",
        threshold=Decimal("200"),
        feature="search",
    )
    ingest([record("team", HOUR - timedelta(hours=3), 150.0, feature="search")])
    ingest([record("team", HOUR - timedelta(hours=3), 500.0, feature="chat")])  # another feature
    with django_capture_on_commit_callbacks(execute=False):
        assert alert_rule_evaluate(rule_id=rule.pk, now=NOW) is None  # $150 of $200

        ingest([record("team", HOUR - timedelta(hours=2), 60.0, feature="search")])
        event = alert_rule_evaluate(rule_id=rule.pk, now=NOW)
        assert event is not None and event.value == Decimal("210")
        # Still breaching: the same event, no second notification.
        ingest([record("team", HOUR - timedelta(hours=1), 40.0, feature="search")])
        assert alert_rule_evaluate(rule_id=rule.pk, now=NOW + timedelta(minutes=5)) is None
        event.refresh_from_db()
        assert (event.last_value, event.peak_value, event.resolved_at) == (
            Decimal("250"),
            Decimal("250"),
            None,
        )

        # A new day: the daily cost is back under the threshold, and the breach resolves.
        tomorrow = NOW + timedelta(days=1)
        resolved = alert_rule_evaluate(rule_id=rule.pk, now=tomorrow)
        assert resolved.pk == event.pk and resolved.resolved_at == tomorrow
        assert alert_rule_evaluate(rule_id=rule.pk, now=tomorrow + timedelta(minutes=5)) is None
    assert AlertRuleEvent.objects.count() == 1
    kinds = sorted(delivery.payload["type"] for delivery in NotificationDelivery.objects.all())
    assert kinds == ["alert_rule.fired", "alert_rule.resolved"]


def test_p95_latency_for_three_hours(ingest):
    tenant = TenantFactory(slug="team")
    rule = AlertRule.objects.create(
        tenant=tenant,
        name="slow gpt-4o",
        metric="p95_latency",
        window="hour",
        threshold=Decimal("2000"),
        consecutive_windows=3,
        model="in-house-model",
    )
    slow = [
        {**record("team", HOUR - timedelta(hours=back, minutes=-minute), 0.01), "latency_ms": 4000}
        for back in (1, 2)
        for minute in range(5)
    ]
    ingest(slow)
    assert alert_rule_evaluate(rule_id=rule.pk, now=NOW) is None  # two slow hours of three
    ingest(
        [
            {**record("team", HOUR - timedelta(hours=3, minutes=-minute), 0.01), "latency_ms": 4000}
            for minute in range(5)
        ]
    )
    event = alert_rule_evaluate(rule_id=rule.pk, now=NOW)
    assert event is not None and event.value > 2000
    assert alert_rules_evaluate_all(now=NOW + timedelta(hours=1)) == 1  # the next hour has no calls: resolved
    event.refresh_from_db()
    assert event.resolved_at == NOW + timedelta(hours=1)


def test_metrics_from_rollup_sums():
    sums = {
        "requests": 200,
        "unpriced_requests": 3,
        "uncached_input_tokens": 1000,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 1000,
        "cost_nanos": 4 * 10**9,
        "latency_count": 4,
        "latency_ms_sum": 1000,
        **{f"latency_bucket_{index:02d}": 0 for index in range(18)},
    }
    assert metric_value("cost", sums) == Decimal(4)
    assert metric_value("tokens", sums) == 2000
    assert metric_value("cost_per_1k_tokens", sums) == Decimal(2)
    assert metric_value("average_latency", sums) == 250
    assert metric_value("error_rate", sums, error_requests=10) == Decimal("0.05")
    assert metric_value("unpriced_requests", sums) == 3
    assert metric_value("p95_latency", sums) is None  # no latencies in the histogram
    assert metric_value("error_rate", {**sums, "requests": 0}) is None


def test_latency_quantile_interpolates_inside_the_bucket():
    buckets = [0] * 18
    buckets[8] = 100  # all calls in (1500, 2000] ms
    assert latency_quantile(buckets, 0.95) == Decimal(1975)
    buckets[17] = 1000  # most above 60 s: the open bucket answers its lower bound
    assert latency_quantile(buckets, 0.95) == Decimal(60000)
    assert latency_quantile([0] * 18, 0.95) is None
