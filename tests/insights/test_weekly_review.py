"""The weekly cost review: the last complete week of the tenant's calendar against the week before,
by tenant and feature (the costs API's figures), new anomalies, budgets and top opportunities; sent
once per channel and week."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from budgets.models import NotificationDelivery
from chargeback.services import usage_records_ingest
from insights.models import Anomaly
from insights.weekly_review_selectors import review_week_last_complete, weekly_review
from insights.weekly_review_services import (
    weekly_review_send,
    weekly_review_tenant_ids,
    weekly_reviews_send_all,
)
from tests.factories import BudgetFactory, NotificationChannelFactory, TenantFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday
USD = 10**9


def usd(amount: str) -> int:
    return int(Decimal(amount) * USD)


def call(tenant, at, cost, feature, **fields):
    return {
        "event_id": f"{tenant}-{at.isoformat()}-{cost}-{feature}",
        "timestamp": at.isoformat(),
        "tenant": tenant,
        "provider": "acme",
        "model": "in-house",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": cost,
        "tags": {"feature": feature},
        **fields,
    }


@pytest.fixture
def org():
    org = TenantFactory(slug="org", kind="organization", time_zone="Europe/Berlin")
    TenantFactory(slug="team-a", parent=org, time_zone="Europe/Berlin")
    TenantFactory(slug="team-b", parent=org, time_zone="Europe/Berlin")
    TenantFactory(slug="elsewhere", kind="organization")
    items = [
        call("team-a", datetime(2026, 11, 3, 9, tzinfo=UTC), "0.50", "chat"),  # the week before
        call("team-a", datetime(2026, 11, 8, 23, 30, tzinfo=UTC), "0.25", "chat"),  # Monday 00:30 in Berlin
        call("team-a", datetime(2026, 11, 10, 10, tzinfo=UTC), "1.00", "chat"),
        call("team-b", datetime(2026, 11, 12, 10, tzinfo=UTC), "2.00", "search"),
        call("team-a", datetime(2026, 11, 15, 23, 30, tzinfo=UTC), "0.75", "chat"),  # the next week in Berlin
        call("elsewhere", datetime(2026, 11, 10, 10, tzinfo=UTC), "9.00", "chat"),
        # A repeated prompt, earlier: an exact-match cache opportunity of 0.40 over the 30 days.
        call("team-a", datetime(2026, 10, 25, 10, tzinfo=UTC), "0.40", "faq", prompt_hash="h"),
        call("team-a", datetime(2026, 10, 25, 11, tzinfo=UTC), "0.40", "faq", prompt_hash="h"),
    ]
    result = usage_records_ingest(
        items=[json.dumps(item).encode() for item in items], scope_tenant_ids=None, now=NOW
    )
    assert result.accepted == len(items), result.errors
    return org


def test_the_last_complete_week_is_the_tenants_calendar(org):
    week = review_week_last_complete(org, NOW)
    assert week.key == "2026-W46"
    assert (week.start, week.end) == (
        datetime(2026, 11, 8, 23, tzinfo=UTC),
        datetime(2026, 11, 15, 23, tzinfo=UTC),
    )
    # On Monday morning in Berlin, the week that just ended.
    assert review_week_last_complete(org, datetime(2026, 11, 16, 0, 30, tzinfo=UTC)).key == "2026-W46"


def test_review_figures_by_hand_and_equal_to_the_costs_api(org, client_for):
    anomaly = Anomaly.objects.create(
        tenant=org, granularity="day", dimension="total", direction="increase",
        started_at=datetime(2026, 11, 12, tzinfo=UTC), ended_at=datetime(2026, 11, 13, tzinfo=UTC),
        actual_nanos=2 * USD, expected_nanos=USD, impact_nanos=USD, max_impact_nanos=USD,
        current_score=5, max_score=5, rule="seasonal",
    )  # fmt: skip
    Anomaly.objects.filter(pk=anomaly.pk).update(created_at=datetime(2026, 11, 12, 8, tzinfo=UTC))
    BudgetFactory(tenant=org, name="Org monthly", amount_nanos=10 * USD)
    review = weekly_review(org, now=NOW)
    assert (review["spend_nanos"], review["previous_spend_nanos"]) == (usd("3.25"), USD // 2)
    assert (review["change_nanos"], review["change_percent"]) == (usd("2.75"), 550.0)
    assert [(row["tenant"], row["spend_nanos"], row["previous_spend_nanos"], row["change_percent"])
            for row in review["by_tenant"]] == [("team-b", 2 * USD, 0, None), ("team-a", usd("1.25"), USD // 2, 150.0)]  # fmt: skip
    assert [(row["feature"], row["spend_nanos"]) for row in review["by_feature"]] == [
        ("search", 2 * USD),
        ("chat", usd("1.25")),
    ]
    assert [found.pk for found in review["anomalies"]] == [anomaly.pk]
    (status,) = review["budgets"]
    assert status["spent_nanos"] == usd("4.50")  # November in Berlin: everything but October's prompts
    assert [(entry["kind"], entry["monthly_savings_nanos"]) for entry in review["opportunities"]] == [
        ("exact_cache", usd("0.40"))
    ]
    # The single source of truth: the costs API gives the same numbers for the same week.
    api = client_for(org, scopes=["read"]).get(
        "/api/v1/costs/",
        {"group_by": "tenant", "granularity": "total", "start": "2026-11-09", "end": "2026-11-16"},
    )
    assert {row["group"]["tenant"]: row["cost_usd"] for row in api.json()["rows"]} == {
        "team-b": "2.000000000",
        "team-a": "1.250000000",
    }


def test_sent_once_per_channel_and_week_with_summary_and_details(org, django_capture_on_commit_callbacks):
    NotificationChannelFactory(tenant=org)
    NotificationChannelFactory(tenant=org, kind="email", target="finops@example.com")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = weekly_review_send(tenant=org, now=NOW)
        again = weekly_review_send(tenant=org, now=NOW + timedelta(hours=1))
    assert len(first) == 2 and {delivery.pk for delivery in again} == {delivery.pk for delivery in first}
    assert len(callbacks) == 2
    delivery = NotificationDelivery.objects.filter(dedupe_key="weekly-review:org:2026-W46").first()
    payload = delivery.payload
    assert payload["type"] == "weekly_review" and payload["week"]["key"] == "2026-W46"
    assert (payload["spend_usd"], payload["previous_spend_usd"], payload["change_percent"]) == (
        "3.250000000",
        "0.500000000",
        550.0,
    )
    assert (
        payload["summary"]
        == "Weekly cost review for org, 2026-W46: $3.25 spent, +$2.75 (+550.0%) on the week before"
    )
    assert "Tenant team-b: $2.00 (+$2.00 (new))" in payload["details"]
    assert "Feature chat: $1.25 (+$0.75 (+150.0%))" in payload["details"]
    assert any(line.startswith("Opportunity 1: Cache repeated prompts of faq") for line in payload["details"])
    assert "elsewhere" not in json.dumps(payload)


def test_tenants_with_their_own_channels_get_a_review_of_their_subtree(
    org, django_capture_on_commit_callbacks
):
    NotificationChannelFactory(tenant=org)
    team_b = org.children.get(slug="team-b")
    NotificationChannelFactory(tenant=team_b)
    NotificationChannelFactory(tenant=TenantFactory(slug="inactive", is_active=False))
    assert weekly_review_tenant_ids() == sorted([org.pk, team_b.pk])
    with django_capture_on_commit_callbacks(execute=False):
        assert weekly_reviews_send_all(now=NOW) == 2
    team_review = NotificationDelivery.objects.get(dedupe_key="weekly-review:team-b:2026-W46").payload
    assert team_review["spend_usd"] == "2.000000000" and [
        row["tenant"] for row in team_review["by_tenant"]
    ] == ["team-b"]


def test_the_command_sends_one_tenants_review(org, django_capture_on_commit_callbacks, monkeypatch):
    from insights import weekly_review_services

    NotificationChannelFactory(tenant=org)
    monkeypatch.setattr(weekly_review_services.timezone, "now", lambda: NOW)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=False):
        call_command("send_weekly_reviews", tenant="org", stdout=out)
    assert "Weekly review of org: 1 delivery(ies)." in out.getvalue()
    assert NotificationDelivery.objects.filter(dedupe_key="weekly-review:org:2026-W46").count() == 1


def test_beat_fans_out_one_task_per_reviewed_tenant(org, settings, monkeypatch):
    from insights import tasks

    entry = settings.CELERY_BEAT_SCHEDULE["weekly-reviews"]
    assert entry["task"] == "insights.tasks.weekly_reviews_send_all_task"
    assert entry["schedule"].day_of_week == {1}
    NotificationChannelFactory(tenant=org)
    queued = []
    monkeypatch.setattr(tasks.weekly_review_send_task, "delay", queued.append)
    assert tasks.weekly_reviews_send_all_task() == 1 and queued == [org.pk]
