from datetime import timedelta
from decimal import Decimal

import pytest

from insights.models import AlertRule, AlertRuleEvent, AnomalySubscription, Forecast
from tests.factories import TenantFactory
from tests.insights.conftest import NOW
from tests.insights.test_services import make_anomaly
from tests.openapi import assert_conforms_to_schema

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenants():
    organisation = TenantFactory(slug="org", kind="organization")
    return {
        "org": organisation,
        "team": TenantFactory(slug="team", parent=organisation),
        "other": TenantFactory(slug="other"),
    }


def make_forecast(tenant) -> Forecast:
    return Forecast.objects.create(
        tenant=tenant,
        kind="month",
        period_key="2026-11",
        period_start=NOW.replace(day=1, hour=0, minute=0),
        period_end=NOW.replace(month=12, day=1, hour=0, minute=0),
        computed_at=NOW,
        actual_nanos=10 * 10**9,
        forecast_nanos=30 * 10**9,
        lower_nanos=25 * 10**9,
        upper_nanos=36 * 10**9,
        method="ets",
        history_days=90,
    )


def make_rule(tenant) -> AlertRule:
    return AlertRule.objects.create(
        tenant=tenant, name="daily search", metric="cost", window="day", threshold=200
    )


def test_anomalies_list_and_detail(client_for, tenants):
    anomaly = make_anomaly(tenants["team"])
    make_anomaly(tenants["other"])
    response = client_for(tenants["org"], scopes=["read"]).get("/api/v1/anomalies/")
    assert response.status_code == 200
    [row] = response.json()["results"]
    assert row["id"] == anomaly.pk
    assert (row["tenant"], row["actual_usd"], row["expected_usd"], row["impact_usd"]) == (
        "team",
        "50.000000000",
        "10.000000000",
        "40.000000000",
    )
    assert row["impact_percent"] == "400.00"
    assert row["root_causes"][0] == {
        "dimension": "feature",
        "value": "search",
        "actual_usd": "45.000000000",
        "expected_usd": "5.000000000",
        "impact_usd": "40.000000000",
        "share": 1.0,
    }
    detail = client_for(tenants["org"], scopes=["read"]).get(f"/api/v1/anomalies/{anomaly.pk}/")
    assert detail.status_code == 200 and detail.json()["points"] == []


def test_anomaly_filters(client_for, tenants):
    make_anomaly(tenants["team"], status="acknowledged")
    small = make_anomaly(tenants["org"], impact_nanos=10**9, dimension="feature", dimension_value="chat")
    client = client_for(None, scopes=["read"])
    assert [row["id"] for row in client.get("/api/v1/anomalies/?min_impact_usd=5").json()["results"]] != [
        small.pk
    ]
    rows = client.get("/api/v1/anomalies/?tenant=org&dimension=feature").json()["results"]
    assert [row["id"] for row in rows] == [small.pk]
    assert client.get("/api/v1/anomalies/?status=acknowledged").json()["count"] == 1
    started_after = (NOW - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert client.get("/api/v1/anomalies/", {"started_after": started_after}).json()["count"] == 0


def test_acknowledge_and_feedback_need_admin_and_stay_in_scope(client_for, tenants):
    anomaly = make_anomaly(tenants["team"])
    assert (
        client_for(tenants["org"], scopes=["read"])
        .post(f"/api/v1/anomalies/{anomaly.pk}/acknowledge")
        .status_code
        == 403
    )
    admin = client_for(tenants["org"], scopes=["admin"])
    response = admin.post(f"/api/v1/anomalies/{anomaly.pk}/acknowledge")
    assert response.status_code == 200 and response.json()["status"] == "acknowledged"
    response = admin.post(
        f"/api/v1/anomalies/{anomaly.pk}/feedback", {"feedback": "false_positive"}, format="json"
    )
    assert response.status_code == 200 and response.json()["feedback"] == "false_positive"
    bad = admin.post(f"/api/v1/anomalies/{anomaly.pk}/feedback", {"feedback": "meh"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "validation_error"
    assert admin.post(f"/api/v1/anomalies/{anomaly.pk}/resolve").json()["status"] == "resolved"
    conflict = admin.post(f"/api/v1/anomalies/{anomaly.pk}/acknowledge")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "invalid_state"


def test_a_tenant_key_gets_404_for_another_tenants_objects(client_for, tenants):
    other = tenants["other"]
    anomaly = make_anomaly(other)
    forecast = make_forecast(other)
    rule = make_rule(other)
    AlertRuleEvent.objects.create(
        rule=rule, fired_at=NOW, window_start=NOW, value=1, last_value=1, peak_value=1
    )
    subscription = AnomalySubscription.objects.create(tenant=other, name="x")
    reader = client_for(tenants["team"], scopes=["read", "admin"])
    for url in (
        f"/api/v1/anomalies/{anomaly.pk}/",
        f"/api/v1/forecasts/{forecast.pk}/",
        f"/api/v1/alert-rules/{rule.pk}/",
        f"/api/v1/anomaly-subscriptions/{subscription.pk}/",
    ):
        response = reader.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    for action in ("acknowledge", "resolve"):
        assert reader.post(f"/api/v1/anomalies/{anomaly.pk}/{action}").status_code == 404
    assert (
        reader.post(
            f"/api/v1/anomalies/{anomaly.pk}/feedback", {"feedback": "planned"}, format="json"
        ).status_code
        == 404
    )
    assert reader.patch(f"/api/v1/alert-rules/{rule.pk}/", {"name": "mine"}, format="json").status_code == 404
    assert reader.delete(f"/api/v1/anomaly-subscriptions/{subscription.pk}/").status_code == 404
    for url in (
        "/api/v1/anomalies/",
        "/api/v1/forecasts/",
        "/api/v1/alert-rules/",
        "/api/v1/alert-rule-events/",
        "/api/v1/anomaly-subscriptions/",
    ):
        assert reader.get(url).json()["count"] == 0, url


def test_forecasts_list(client_for, tenants):
    forecast = make_forecast(tenants["team"])
    make_forecast(tenants["other"])
    rows = client_for(tenants["team"], scopes=["read"]).get("/api/v1/forecasts/?kind=month").json()["results"]
    assert [row["id"] for row in rows] == [forecast.pk]
    assert (rows[0]["forecast_usd"], rows[0]["lower_usd"], rows[0]["upper_usd"]) == (
        "30.000000000",
        "25.000000000",
        "36.000000000",
    )


def test_alert_rules_crud_within_scope(client_for, tenants):
    admin = client_for(tenants["org"], scopes=["admin"])
    created = admin.post(
        "/api/v1/alert-rules/",
        {
            "tenant": "team",
            "name": "slow",
            "metric": "p95_latency",
            "window": "hour",
            "threshold": "2000",
            "consecutive_windows": 3,
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["firing"] is False
    rule = AlertRule.objects.get(pk=created.json()["id"])
    assert (rule.tenant, rule.threshold, rule.consecutive_windows) == (tenants["team"], Decimal(2000), 3)
    outside = admin.post(
        "/api/v1/alert-rules/",
        {"tenant": "other", "name": "x", "metric": "cost", "threshold": "1"},
        format="json",
    )
    assert outside.status_code == 400
    patched = admin.patch(f"/api/v1/alert-rules/{rule.pk}/", {"threshold": "2500"}, format="json")
    assert patched.status_code == 200 and patched.json()["threshold"] == "2500.000000000"
    assert (
        client_for(tenants["org"], scopes=["read"]).delete(f"/api/v1/alert-rules/{rule.pk}/").status_code
        == 403
    )
    assert admin.delete(f"/api/v1/alert-rules/{rule.pk}/").status_code == 204


def test_subscriptions_crud(client_for, tenants):
    admin = client_for(tenants["team"], scopes=["admin"])
    created = admin.post(
        "/api/v1/anomaly-subscriptions/",
        {
            "tenant": "team",
            "name": "finops",
            "min_impact_usd": "100",
            "min_impact_percent": "20",
            "frequency": "daily",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    subscription = AnomalySubscription.objects.get()
    assert (subscription.min_impact_nanos, subscription.frequency) == (100 * 10**9, "daily")
    listed = client_for(tenants["team"], scopes=["read"]).get("/api/v1/anomaly-subscriptions/").json()
    assert listed["results"][0]["min_impact_usd"] == "100.000000000"


def test_an_anomaly_without_feedback_conforms_to_the_schema(client_for, tenants):
    """Found by schema fuzzing: `feedback` is empty until someone gives it, which the schema's
    enum did not allow."""
    anomaly = make_anomaly(tenants["team"])
    client = client_for(tenants["org"], scopes=["read"])
    assert_conforms_to_schema(client.get("/api/v1/anomalies/"), "GET /api/v1/anomalies/")
    detail = client.get(f"/api/v1/anomalies/{anomaly.pk}/")
    assert detail.json()["feedback"] == ""
    assert_conforms_to_schema(detail, "GET /api/v1/anomalies/{id}/")


@pytest.mark.parametrize("value", ["-1.7976931348623155e+308", "1e30", "-5", "NaN", "Infinity"])
def test_an_impossible_min_impact_is_a_400_not_a_500(client_for, tenants, value):
    """Found by schema fuzzing: a huge or non-finite amount raised in the filter (a 500)."""
    make_anomaly(tenants["team"])
    response = client_for(None, scopes=["read"]).get("/api/v1/anomalies/", {"min_impact_usd": value})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and "min_impact_usd" in error["details"]


def test_acknowledging_a_resolved_anomaly_is_a_documented_409(client_for, tenants):
    """The 409 was not in the schema (the schema fuzz test now reaches it: it seeds a resolved anomaly)."""
    anomaly = make_anomaly(tenants["team"], status="resolved")
    response = client_for(tenants["org"], scopes=["admin"]).post(
        f"/api/v1/anomalies/{anomaly.pk}/acknowledge"
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "invalid_state"
    assert_conforms_to_schema(response, "POST /api/v1/anomalies/{id}/acknowledge")
