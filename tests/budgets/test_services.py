import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from budgets.models import BudgetAlert, NotificationDelivery
from budgets.selectors import budget_spend, budget_status
from budgets.services import budget_evaluate, budgets_evaluate_all
from chargeback.services import usage_records_ingest
from tests.factories import BudgetFactory, BudgetThresholdFactory, NotificationChannelFactory, TenantFactory

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def ingest(tenant_slug, cost_usd, at=NOW - timedelta(hours=1), event_id=None, **fields):
    """One record of an unpriced model with a client-reported cost: an exact, chosen amount."""
    record = {
        "event_id": event_id
        or f"{tenant_slug}-{cost_usd}-{at.isoformat()}-{json.dumps(fields, sort_keys=True)}",
        "timestamp": at.isoformat(),
        "tenant": tenant_slug,
        "provider": "acme",
        "model": "in-house-model",
        "input_tokens": 10,
        "output_tokens": 10,
        "cost_usd": str(cost_usd),
        **fields,
    }
    if cost_usd is None:
        del record["cost_usd"]
    result = usage_records_ingest(
        items=[json.dumps(record).encode()], scope_tenant_ids=None, now=max(at, NOW)
    )
    assert result.accepted == 1, result.errors


@pytest.fixture
def tree(db):
    org = TenantFactory(slug="org", kind="organization", time_zone="Europe/Berlin")
    team = TenantFactory(slug="team", parent=org)
    project = TenantFactory(slug="project", parent=team)
    return org, team, project


def test_child_spend_counts_toward_the_parents_budget(tree):
    org, team, _project = tree
    ingest("project", "3")
    ingest("team", "2")
    ingest("org", "1")
    other = TenantFactory(slug="other")
    ingest("other", "50")
    budget = BudgetFactory(tenant=team, amount_nanos=10 * 10**9)
    status = budget_status(budget, NOW)
    assert status["spent_nanos"] == 5 * 10**9
    assert budget_spend(BudgetFactory(tenant=org), status["period"]) == 6 * 10**9
    assert other.pk


def test_spend_is_narrowed_by_model_provider_and_tags(tree):
    _org, team, _ = tree
    ingest("team", "1", tags={"feature": "search", "customer": "acme"})
    ingest("team", "2", tags={"feature": "chat", "customer": "acme"})
    ingest("team", None, tags={"feature": "chat"}, provider="openai", model="gpt-4o")
    gpt_4o_call = 10 * 2500 + 10 * 10000  # nanos: 10 input and 10 output tokens at $2.50 and $10 per million
    period = budget_status(BudgetFactory(tenant=team), NOW)["period"]
    assert budget_spend(BudgetFactory(tenant=team, tag_key="feature", tag_value="chat"), period) == (
        2 * 10**9 + gpt_4o_call
    )
    assert budget_spend(BudgetFactory(tenant=team, tag_key="customer", tag_value="acme"), period) == 3 * 10**9
    assert budget_spend(BudgetFactory(tenant=team, model="in-house-model"), period) == 3 * 10**9
    assert budget_spend(BudgetFactory(tenant=team, provider="openai", model="gpt-4o"), period) == gpt_4o_call


def test_spend_in_a_half_hour_zone_is_exact_at_the_edges(db):
    TenantFactory(slug="india", time_zone="Asia/Kolkata")
    # November in India starts at 18:30 UTC on 31 October.
    ingest("india", "1", at=datetime(2026, 10, 31, 18, 10, tzinfo=UTC))  # October
    ingest("india", "2", at=datetime(2026, 10, 31, 18, 40, tzinfo=UTC))  # November
    ingest("india", "4", at=datetime(2026, 11, 10, 9, tzinfo=UTC))
    budget = BudgetFactory(tenant__slug="india")
    assert budget_status(budget, NOW)["spent_nanos"] == 6 * 10**9


def test_a_threshold_alerts_once_per_period(tree):
    _, team, _ = tree
    budget = BudgetFactory(tenant=team, amount_nanos=10 * 10**9)
    eighty = BudgetThresholdFactory(budget=budget, percent=80)
    BudgetThresholdFactory(budget=budget, percent=100)
    ingest("team", "7")
    assert budget_evaluate(budget_id=budget.pk, now=NOW) == []
    ingest("team", "1.5")
    alerts = budget_evaluate(budget_id=budget.pk, now=NOW)
    assert [(alert.threshold, alert.kind) for alert in alerts] == [(eighty, "actual")]
    assert alerts[0].spent_nanos == 8_500_000_000
    assert budget_evaluate(budget_id=budget.pk, now=NOW) == []
    ingest("team", "5")
    assert [alert.threshold.percent for alert in budget_evaluate(budget_id=budget.pk, now=NOW)] == [100]
    assert budgets_evaluate_all(now=NOW) == 0
    assert BudgetAlert.objects.count() == 2


def test_a_new_period_starts_cleanly_at_local_midnight_on_the_first(tree):
    _, team, _ = tree
    team.time_zone = "Europe/Berlin"
    team.save()
    budget = BudgetFactory(tenant=team, amount_nanos=10 * 10**9)
    BudgetThresholdFactory(budget=budget, percent=50)
    november_end = datetime(2026, 11, 30, 22, 59, tzinfo=UTC)  # 23:59 on 30 November in Berlin
    december_start = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # 00:00 on 1 December in Berlin
    ingest("team", "6", at=november_end - timedelta(minutes=5))
    assert len(budget_evaluate(budget_id=budget.pk, now=november_end)) == 1
    status = budget_status(budget, december_start)
    assert (status["period"].key, status["spent_nanos"]) == ("2026-12", 0)
    assert budget_evaluate(budget_id=budget.pk, now=december_start) == []
    ingest("team", "5", at=december_start)
    alerts = budget_evaluate(budget_id=budget.pk, now=december_start + timedelta(minutes=1))
    assert [alert.period_key for alert in alerts] == ["2026-12"]


def test_forecast_thresholds(tree):
    _, team, _ = tree
    budget = BudgetFactory(tenant=team, amount_nanos=30 * 10**9, period="day")
    BudgetThresholdFactory(budget=budget, percent=100, on_actual=True, on_forecast=True)
    noon = datetime(2026, 11, 20, 12, tzinfo=UTC)  # the team's day is UTC: half of it is gone
    ingest("team", "16", at=noon - timedelta(hours=1))
    alerts = budget_evaluate(budget_id=budget.pk, now=noon)
    assert [(alert.kind, alert.forecast_nanos) for alert in alerts] == [("forecast", 32 * 10**9)]


def test_an_alert_creates_one_delivery_per_inherited_channel(tree, django_capture_on_commit_callbacks):
    org, team, _ = tree
    NotificationChannelFactory(tenant=org, target="http://127.0.0.1:9/a")
    NotificationChannelFactory(tenant=org, kind="email", target="finops@example.com")
    budget = BudgetFactory(tenant=team, amount_nanos=10**9)
    BudgetThresholdFactory(budget=budget, percent=50)
    ingest("team", "1")
    with django_capture_on_commit_callbacks(execute=False):
        budget_evaluate(budget_id=budget.pk, now=NOW)
        budget_evaluate(budget_id=budget.pk, now=NOW)
    assert NotificationDelivery.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_evaluations_record_one_alert():
    TenantFactory(slug="team")
    budget = BudgetFactory(tenant__slug="team", amount_nanos=10**9)
    BudgetThresholdFactory(budget=budget, percent=50)
    BudgetThresholdFactory(budget=budget, percent=90)
    ingest("team", "1")
    barrier = threading.Barrier(4)
    errors = []

    def evaluate():
        try:
            barrier.wait()
            budget_evaluate(budget_id=budget.pk, now=NOW)
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(BudgetAlert.objects.values_list("threshold__percent", flat=True)) == [
        Decimal(50),
        Decimal(90),
    ]
