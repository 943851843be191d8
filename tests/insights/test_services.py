from datetime import timedelta

import pytest

from budgets.models import NotificationDelivery
from insights.models import Anomaly, AnomalyNotification, AnomalySubscription
from insights.services import (
    AnomalyActionError,
    anomalies_detect_tenant,
    anomaly_acknowledge,
    anomaly_digests_send,
    anomaly_feedback_set,
)
from tests.factories import NotificationChannelFactory, TenantFactory
from tests.insights.conftest import NOW, hourly_usage, record

pytestmark = pytest.mark.django_db


def spike(tenant: str, hour_start, amount: float, feature: str = "search") -> list[dict]:
    return [
        record(tenant, hour_start + timedelta(minutes=minute), amount / 4, feature=feature)
        for minute in (1, 2, 3, 4)
    ]


def test_a_spike_on_a_feature_is_one_anomaly_with_that_feature_as_root_cause(ingest):
    tenant = TenantFactory(slug="team")
    ingest(hourly_usage("team", days=35, end=NOW, features={"chat": 2.0, "search": 1.0}))
    last_hour = NOW.replace(minute=0) - timedelta(hours=1)
    ingest(spike("team", last_hour, 40.0))

    summary = anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW)

    hourly_total = Anomaly.objects.get(tenant=tenant, granularity="hour", dimension="total")
    assert hourly_total.direction == "increase"
    assert hourly_total.started_at == last_hour
    assert hourly_total.ended_at == last_hour + timedelta(hours=1)
    assert hourly_total.actual_nanos > 40 * 10**9
    assert hourly_total.impact_nanos == hourly_total.actual_nanos - hourly_total.expected_nanos
    assert hourly_total.impact_percent is not None and hourly_total.impact_percent > 300
    top = hourly_total.root_causes[0]
    assert (top["dimension"], top["value"]) == ("feature", "search")
    assert top["share"] > 0.9
    # The leaf series sees it too: the search feature's own series.
    assert Anomaly.objects.filter(
        tenant=tenant, granularity="hour", dimension="feature", dimension_value="search"
    ).exists()
    assert not Anomaly.objects.filter(dimension="feature", dimension_value="chat").exists()
    assert set(summary.opened) == set(Anomaly.objects.values_list("pk", flat=True))


def test_an_ongoing_anomaly_is_extended_not_duplicated(ingest):
    tenant = TenantFactory(slug="team")
    ingest(hourly_usage("team", days=35, end=NOW + timedelta(hours=2), features={"chat": 2.0, "search": 1.0}))
    first_hour = NOW.replace(minute=0) - timedelta(hours=1)
    ingest(spike("team", first_hour, 40.0))
    anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW)
    anomaly = Anomaly.objects.get(tenant=tenant, granularity="hour", dimension="total")

    # The runaway goes on for another hour; the next hourly run extends the same anomaly.
    ingest(spike("team", first_hour + timedelta(hours=1), 50.0), now=NOW + timedelta(hours=1))
    summary = anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW + timedelta(hours=1))
    assert anomaly.pk in summary.extended
    assert Anomaly.objects.filter(tenant=tenant, granularity="hour", dimension="total").count() == 1
    anomaly.refresh_from_db()
    assert anomaly.ended_at == first_hour + timedelta(hours=2)
    assert len(anomaly.points) == 2
    assert anomaly.actual_nanos > 90 * 10**9
    assert anomaly.max_impact_nanos > 40 * 10**9

    # Running again at the same time changes nothing (the task is idempotent).
    again = anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW + timedelta(hours=1))
    assert again.opened == []
    assert Anomaly.objects.filter(tenant=tenant).count() == Anomaly.objects.filter(
        pk__in=again.extended
    ).count() + (Anomaly.objects.filter(tenant=tenant).exclude(pk__in=again.extended).count())
    assert Anomaly.objects.filter(tenant=tenant, granularity="hour", dimension="total").count() == 1


def test_an_anomaly_that_ended_is_resolved(ingest):
    tenant = TenantFactory(slug="team")
    ingest(
        hourly_usage("team", days=35, end=NOW + timedelta(hours=10), features={"chat": 2.0, "search": 1.0})
    )
    last_hour = NOW.replace(minute=0) - timedelta(hours=1)
    ingest(spike("team", last_hour, 40.0))
    anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW)
    anomaly = Anomaly.objects.get(tenant=tenant, granularity="hour", dimension="total")

    anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW + timedelta(hours=8))
    anomaly.refresh_from_db()
    assert anomaly.status == Anomaly.Status.RESOLVED
    assert anomaly.resolved_at == NOW + timedelta(hours=8)
    # Later runs still see the spike among the last day's hours: it is not reported again.
    assert anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW + timedelta(hours=9)).opened == []
    assert Anomaly.objects.filter(tenant=tenant, granularity="hour", dimension="total").count() == 1


def test_a_child_tenants_runaway_is_found_on_the_parent_with_the_child_as_root_cause(ingest):
    organisation = TenantFactory(slug="org", kind="organization")
    TenantFactory(slug="team-a", parent=organisation)
    TenantFactory(slug="team-b", parent=organisation)
    ingest(hourly_usage("team-a", days=35, end=NOW, features={"chat": 2.0}, seed=3))
    ingest(hourly_usage("team-b", days=35, end=NOW, features={"chat": 2.0}, seed=4))
    last_hour = NOW.replace(minute=0) - timedelta(hours=1)
    ingest(spike("team-b", last_hour, 60.0, feature="chat"))

    anomalies_detect_tenant(tenant_id=organisation.pk, now=NOW)

    anomaly = Anomaly.objects.get(tenant=organisation, granularity="hour", dimension="total")
    causes = {(cause["dimension"], cause["value"]): cause for cause in anomaly.root_causes}
    assert causes[("tenant", "team-b")]["share"] > 0.9
    assert causes.get(("tenant", "team-a"), {"share": 0})["share"] < 0.1


def test_normal_usage_raises_nothing(ingest):
    tenant = TenantFactory(slug="team")
    ingest(hourly_usage("team", days=35, end=NOW, features={"chat": 2.0, "search": 1.0}))
    summary = anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW)
    assert summary.series == 6  # total and two features, hourly and daily (one model: no model series)
    assert summary.opened == []
    assert not Anomaly.objects.exists()


def test_a_new_tenants_first_days_raise_nothing(ingest):
    tenant = TenantFactory(slug="new-team")
    ingest(hourly_usage("new-team", days=2, end=NOW, features={"chat": 5.0}))
    ingest(spike("new-team", NOW.replace(minute=0) - timedelta(hours=1), 80.0, feature="chat"))
    assert anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW).opened == []


def subscribe(tenant, **fields) -> AnomalySubscription:
    return AnomalySubscription.objects.create(tenant=tenant, name="on-call", **fields)


def test_subscriptions_gate_notifications_not_detection(ingest, django_capture_on_commit_callbacks):
    organisation = TenantFactory(slug="org", kind="organization")
    TenantFactory(slug="team", parent=organisation)
    NotificationChannelFactory(tenant=organisation)
    quiet = subscribe(organisation, min_impact_nanos=10_000 * 10**9)  # $10,000: too high
    loud = subscribe(organisation, min_impact_nanos=10 * 10**9, min_impact_percent=50)
    ingest(hourly_usage("team", days=35, end=NOW, features={"chat": 2.0, "search": 1.0}))
    ingest(spike("team", NOW.replace(minute=0) - timedelta(hours=1), 40.0))
    team = organisation.children.get()

    with django_capture_on_commit_callbacks(execute=False):
        anomalies_detect_tenant(tenant_id=team.pk, now=NOW)

    anomalies = list(Anomaly.objects.filter(tenant=team))
    assert anomalies  # recorded regardless of any subscription
    notified = AnomalyNotification.objects.filter(subscription=loud)
    assert set(notified.values_list("anomaly_id", flat=True)) == {
        anomaly.pk
        for anomaly in anomalies
        if anomaly.direction == "increase" and anomaly.impact_nanos >= 10 * 10**9
    }
    assert not AnomalyNotification.objects.filter(subscription=quiet).exists()
    deliveries = NotificationDelivery.objects.filter(dedupe_key__startswith="anomaly:")
    assert deliveries.count() == notified.count()
    payload = deliveries.first().payload
    assert payload["type"] == "anomaly.detected"
    assert payload["summary"].startswith("Cost anomaly on team")

    # A second run notifies nobody again.
    with django_capture_on_commit_callbacks(execute=False):
        anomalies_detect_tenant(tenant_id=team.pk, now=NOW)
    assert (
        NotificationDelivery.objects.filter(dedupe_key__startswith="anomaly:").count() == deliveries.count()
    )


def test_a_daily_digest_lists_new_anomalies_once(ingest, django_capture_on_commit_callbacks):
    tenant = TenantFactory(slug="team")
    NotificationChannelFactory(tenant=tenant, kind="slack", target="http://127.0.0.1:9/slack")
    digest = subscribe(tenant, frequency=AnomalySubscription.Frequency.DAILY)
    ingest(hourly_usage("team", days=35, end=NOW, features={"chat": 2.0, "search": 1.0}))
    ingest(spike("team", NOW.replace(minute=0) - timedelta(hours=1), 40.0))
    with django_capture_on_commit_callbacks(execute=False):
        anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW)
        assert not NotificationDelivery.objects.exists()  # daily: nothing immediately
        assert anomaly_digests_send(now=NOW + timedelta(hours=1)) == 1
        assert anomaly_digests_send(now=NOW + timedelta(hours=2)) == 0
    delivery = NotificationDelivery.objects.get()
    assert delivery.payload["type"] == "anomaly.digest"
    assert (
        len(delivery.payload["anomalies"])
        == Anomaly.objects.filter(tenant=tenant, direction="increase").count()
    )
    digest.refresh_from_db()
    assert digest.last_digest_at == NOW + timedelta(hours=2)


def test_acknowledge_and_feedback():
    tenant = TenantFactory()
    anomaly = make_anomaly(tenant)
    anomaly_acknowledge(anomaly=anomaly, now=NOW)
    assert (anomaly.status, anomaly.acknowledged_at) == ("acknowledged", NOW)
    anomaly_feedback_set(anomaly=anomaly, feedback="planned", note="load test")
    anomaly.refresh_from_db()
    assert (anomaly.feedback, anomaly.feedback_note) == ("planned", "load test")
    with pytest.raises(AnomalyActionError):
        anomaly_feedback_set(anomaly=anomaly, feedback="maybe")
    anomaly.status = "resolved"
    with pytest.raises(AnomalyActionError):
        anomaly_acknowledge(anomaly=anomaly)


def make_anomaly(tenant, **fields) -> Anomaly:
    defaults = {
        "granularity": "hour",
        "dimension": "total",
        "direction": "increase",
        "started_at": NOW - timedelta(hours=2),
        "ended_at": NOW - timedelta(hours=1),
        "actual_nanos": 50 * 10**9,
        "expected_nanos": 10 * 10**9,
        "impact_nanos": 40 * 10**9,
        "impact_percent": 400,
        "max_impact_nanos": 40 * 10**9,
        "current_score": 9.5,
        "max_score": 9.5,
        "rule": "point",
        "root_causes": [
            {
                "dimension": "feature",
                "value": "search",
                "actual_nanos": 45 * 10**9,
                "expected_nanos": 5 * 10**9,
                "impact_nanos": 40 * 10**9,
                "share": 1.0,
            }
        ],
    }
    return Anomaly.objects.create(tenant=tenant, **{**defaults, **fields})


def daily_usage(tenant: str, *, days: int, features: dict[str, object], model_of=None) -> list[dict]:
    """One record a day per feature for `days` days before NOW's day, amounts from arrays (USD)."""
    today = NOW.replace(hour=0, minute=0)
    records = []
    for feature, amounts in features.items():
        for day in range(days):
            at = today - timedelta(days=days - day) + timedelta(hours=11)
            model = model_of(feature) if model_of else "in-house-model"
            records.append(record(tenant, at, float(amounts[day]), feature=feature, model=model))
    return records


def test_a_level_shift_is_found_with_its_feature_as_root_cause(ingest):
    from tests.insights.series import daily_series

    tenant = TenantFactory(slug="team")
    chat = daily_series(120, base=100, seed=1)
    search = daily_series(120, base=50, seed=2)
    search[-4:] *= 4  # search quadruples for the last four days, and stays there
    ingest(daily_usage("team", days=120, features={"chat": chat, "search": search}))

    anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW)

    anomaly = Anomaly.objects.get(tenant=tenant, granularity="day", dimension="total")
    assert anomaly.direction == "increase"
    assert anomaly.started_at == NOW.replace(hour=0, minute=0) - timedelta(days=4)
    assert anomaly.ended_at == NOW.replace(hour=0, minute=0)
    top = anomaly.root_causes[0]
    assert (top["dimension"], top["value"]) == ("feature", "search")
    assert top["share"] > 0.9
    assert not Anomaly.objects.filter(granularity="day", dimension="feature", dimension_value="chat").exists()


def test_a_slow_drift_is_found_with_its_model_as_root_cause(ingest):
    import numpy as np

    from tests.insights.series import daily_series

    tenant = TenantFactory(slug="team")
    chat = daily_series(120, base=100, seed=1, growth_per_day=0)
    agent = daily_series(120, base=100, seed=2, growth_per_day=0)
    agent[-18:] *= np.linspace(1.1, 3, 18)  # an agent's loop grows for two and a half weeks
    models = {"chat": "small-model", "agent": "big-model"}
    ingest(daily_usage("team", days=120, features={"chat": chat, "agent": agent}, model_of=models.get))

    anomalies_detect_tenant(tenant_id=tenant.pk, now=NOW)

    anomaly = Anomaly.objects.get(tenant=tenant, granularity="day", dimension="total")
    assert anomaly.started_at >= NOW.replace(hour=0, minute=0) - timedelta(days=18)
    causes = {(cause["dimension"], cause["value"]): cause for cause in anomaly.root_causes}
    assert {("model", "big-model"), ("feature", "agent")} == set(list(causes)[:2])
    assert causes[("model", "big-model")]["share"] > 0.8
    assert causes.get(("model", "small-model"), {"share": 0})["share"] < 0.2
