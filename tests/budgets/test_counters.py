"""Redis budget counters. They need a real Redis: REDIS_URL (set by .ci/run for both databases)."""

import json
import os
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from budgets.counters import counter_key, counters_client
from budgets.selectors import allowance_check, budget_current_period, budget_definitions_forget, budget_spend
from budgets.services import budget_counters_reconcile, budgets_on_ingest
from chargeback.hooks import IngestedRecord
from chargeback.services import usage_records_ingest
from tests.factories import BudgetFactory, TenantFactory

REDIS_URL = os.environ.get("REDIS_URL", "")
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not REDIS_URL, reason="needs a Redis server: set REDIS_URL (CI does)"),
]


@pytest.fixture(autouse=True)
def counters(settings):
    settings.REDIS_URL = REDIS_URL
    budget_definitions_forget()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:*"):
        client.delete(key)
    yield client
    budget_definitions_forget()


def _ingest(records, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        result = usage_records_ingest(
            items=[json.dumps(record).encode() for record in records], scope_tenant_ids=None
        )
    assert result.accepted == len(records), result.errors


def _record(event_id, tenant, cost, **fields):
    return {"event_id": event_id, "timestamp": (timezone.now() - timedelta(minutes=2)).isoformat(), "tenant": tenant,
            "provider": "acme", "model": "in-house", "input_tokens": 1, "output_tokens": 1, "cost_usd": cost,
            **fields}  # fmt: skip


def test_ingestion_increments_the_counters_of_every_matching_budget(
    counters, django_capture_on_commit_callbacks
):
    org = TenantFactory(slug="org")
    TenantFactory(slug="team", parent=org)
    org_budget = BudgetFactory(tenant=org)
    team_budget = BudgetFactory(tenant__slug="team")
    search_only = BudgetFactory(tenant=org, tag_key="feature", tag_value="search")
    _ingest([_record("a", "team", "1.5", tags={"feature": "search"}), _record("b", "org", "2"),
             _record("c", "team", "0.25")], django_capture_on_commit_callbacks)  # fmt: skip
    now = timezone.now()

    def counter(budget):
        return int(counters.get(counter_key(budget.pk, budget_current_period(budget, now).key)) or 0)

    assert counter(org_budget) == 3_750_000_000
    assert counter(team_budget) == 1_750_000_000
    assert counter(search_only) == 1_500_000_000
    for budget in (org_budget, team_budget, search_only):
        assert counter(budget) == budget_spend(budget, budget_current_period(budget, now))


def test_the_allowance_check_reads_the_counters(client_for, counters, django_capture_on_commit_callbacks):
    team = TenantFactory(slug="team")
    budget = BudgetFactory(tenant=team, amount_nanos=10**9, action="block")
    _ingest([_record("a", "team", "0.4")], django_capture_on_commit_callbacks)
    key = counter_key(budget.pk, budget_current_period(budget, timezone.now()).key)
    assert int(counters.get(key)) == 400_000_000
    counters.set(key, 2 * 10**9)  # pretend other processes spent more: the counter, not the database, answers
    decision = client_for(team, scopes=["ingest"]).post("/api/v1/allowance/", {}, format="json").json()
    assert (decision["allowed"], decision["source"], decision["spent_usd"]) == (
        False,
        "counters",
        "2.000000000",
    )


def test_counters_equal_the_database_after_reconciliation(counters, django_capture_on_commit_callbacks):
    team = TenantFactory(slug="team")
    budgets = [BudgetFactory(tenant=team, period=period) for period in ("day", "week", "month", "quarter")]
    _ingest([_record(f"r{index}", "team", "0.1") for index in range(5)], django_capture_on_commit_callbacks)
    now = timezone.now()
    keys = [counter_key(budget.pk, budget_current_period(budget, now).key) for budget in budgets]
    counters.set(keys[0], 999)  # drift
    counters.delete(keys[1])  # lost (Redis restarted)
    assert budget_counters_reconcile(now=now) == 4
    for budget, key in zip(budgets, keys, strict=True):
        assert (
            int(counters.get(key)) == budget_spend(budget, budget_current_period(budget, now)) == 500_000_000
        )
    decision = allowance_check(
        tenant_id=team.pk, provider="", model_id="", tags={}, estimated_cost_nanos=0, now=now
    )
    assert (decision.source, decision.fresh) == ("counters", True)


def test_a_budget_without_a_counter_is_read_from_the_database(counters):
    team = TenantFactory(slug="team")
    BudgetFactory(tenant=team, amount_nanos=10**9, action="block")
    decision = allowance_check(tenant_id=team.pk, provider="", model_id="", tags={}, estimated_cost_nanos=0,
                               now=timezone.now())  # fmt: skip
    assert (decision.allowed, decision.spent_nanos, decision.source) == (True, 0, "counters")


def test_records_outside_a_fixed_budget_range_do_not_count(counters):
    team = TenantFactory(slug="team")
    now = timezone.now()
    budget = BudgetFactory(tenant=team, period="fixed", fixed_start=now - timedelta(days=1), fixed_end=now)
    record = IngestedRecord(team.pk, now + timedelta(seconds=1), "acme", "in-house", {}, 5)
    budgets_on_ingest([record], {team.pk: [team.pk]})
    assert counters.get(counter_key(budget.pk, budget_current_period(budget, now).key)) is None
    assert counters_client() is not None
