from datetime import timedelta

import pytest
from django.utils import timezone

from budgets.models import Budget
from budgets.selectors import allowance_check, budget_definitions_forget
from tests.budgets.test_services import ingest
from tests.factories import BudgetFactory, BudgetThresholdFactory, TenantFactory
from tests.openapi import assert_conforms_to_schema

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_definitions(settings):
    settings.REDIS_URL = ""  # these tests read spend from the database; test_counters covers Redis
    budget_definitions_forget()
    yield
    budget_definitions_forget()


@pytest.fixture
def tree():
    org = TenantFactory(slug="org", kind="organization")
    team = TenantFactory(slug="team", parent=org)
    sibling = TenantFactory(slug="sibling", parent=org)
    return org, team, sibling


def _recent():
    return timezone.now() - timedelta(minutes=5)


def test_create_read_update_delete_a_budget(client_for, tree):
    client = client_for(tree[1], scopes=["admin"])
    body = {
        "tenant": "team", "name": "Team monthly", "amount_usd": "250.00", "period": "month", "action": "block",
        "fallback_model": "gpt-4o-mini", "model": "openai/gpt-4o", "provider": "openai",
        "thresholds": [{"percent": "80"}, {"percent": "100", "on_forecast": True}],
    }  # fmt: skip
    created = client.post("/api/v1/budgets/", body, format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert (data["amount_usd"], data["model"], len(data["thresholds"])) == ("250.000000000", "gpt-4o", 2)
    budget_id = data["id"]
    assert Budget.objects.get(pk=budget_id).amount_nanos == 250 * 10**9
    patched = client.patch(
        f"/api/v1/budgets/{budget_id}/", {"amount_usd": "300", "thresholds": []}, format="json"
    )
    assert patched.json()["amount_usd"] == "300.000000000" and patched.json()["thresholds"] == []
    assert client.get(f"/api/v1/budgets/{budget_id}/").json()["name"] == "Team monthly"
    assert client.get("/api/v1/budgets/?tenant=team").json()["count"] == 1
    assert client.delete(f"/api/v1/budgets/{budget_id}/").status_code == 204
    assert not Budget.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_usd": "0"}, "amount_usd"),
        ({"period": "fixed"}, "fixed_end"),
        ({"tag_key": "feature"}, "tag_value"),
        ({"thresholds": [{"percent": "50"}, {"percent": "50"}]}, "thresholds"),
        ({"thresholds": [{"percent": "0"}]}, "thresholds"),
        ({"tenant": "sibling"}, "tenant"),
    ],
)
def test_invalid_budgets_are_400_with_the_field(client_for, tree, change, field):
    body = {"tenant": "team", "name": "b", "amount_usd": "10", **change}
    response = client_for(tree[1], scopes=["admin"]).post("/api/v1/budgets/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert field in response.json()["error"]["details"]


def test_writes_need_the_admin_scope(client_for, tree):
    response = client_for(tree[1], scopes=["read", "ingest"]).post(
        "/api/v1/budgets/", {"tenant": "team", "name": "b", "amount_usd": "1"}, format="json"
    )
    assert response.json()["error"]["code"] == "scope_missing"


def test_budget_endpoints_are_isolated_between_tenants(client_for, tree):
    org, team, sibling = tree
    theirs = BudgetFactory(tenant=sibling)
    parents = BudgetFactory(tenant=org)
    mine = BudgetFactory(tenant=team)
    client = client_for(team, scopes=["admin"])
    assert [row["id"] for row in client.get("/api/v1/budgets/").json()["results"]] == [mine.pk]
    for other in (theirs, parents):
        for method, url in [
            ("get", f"/api/v1/budgets/{other.pk}/"),
            ("get", f"/api/v1/budgets/{other.pk}/status"),
            ("patch", f"/api/v1/budgets/{other.pk}/"),
            ("put", f"/api/v1/budgets/{other.pk}/"),
            ("delete", f"/api/v1/budgets/{other.pk}/"),
        ]:
            response = getattr(client, method)(url, {"name": "hijacked"}, format="json")
            assert response.status_code == 404, (method, url)
    assert Budget.objects.filter(name="hijacked").count() == 0
    assert Budget.objects.count() == 3
    response = client_for(team, scopes=["read"]).post(
        "/api/v1/allowance/", {"tenant": "sibling"}, format="json"
    )
    assert response.status_code == 404


def test_budget_status(client_for, tree):
    _, team, _ = tree
    budget = BudgetFactory(tenant=team, amount_nanos=10 * 10**9)
    BudgetThresholdFactory(budget=budget, percent=50)
    ingest("team", "6", at=_recent())
    status = client_for(team, scopes=["read"]).get(f"/api/v1/budgets/{budget.pk}/status").json()
    assert (status["spent_usd"], status["remaining_usd"], status["percent_used"]) == (
        "6.000000000", "4.000000000", 60.0,
    )  # fmt: skip
    assert status["thresholds"][0]["limit_usd"] == "5.000000000"


def test_a_block_budget_denies_with_a_reason_and_suggests_its_fallback(client_for, tree):
    org, team, _ = tree
    BudgetFactory(tenant=org, amount_nanos=100 * 10**9, action="notify", name="Org soft")
    blocking = BudgetFactory(tenant=org, amount_nanos=10 * 10**9, action="block", name="Org hard",
                             fallback_model="gpt-4o-mini")  # fmt: skip
    client = client_for(team, scopes=["ingest"])
    ingest("team", "9", at=_recent())
    allowed = client.post("/api/v1/allowance/", {"estimated_cost_usd": "0.5"}, format="json").json()
    assert allowed["allowed"] is True
    assert allowed["budget"]["id"] == blocking.pk  # the tightest applicable budget
    assert allowed["remaining_usd"] == "1.000000000"
    denied = client.post("/api/v1/allowance/", {"estimated_cost_usd": "1.5"}, format="json").json()
    assert denied["allowed"] is False
    assert denied["budget"] == {"id": blocking.pk, "name": "Org hard", "tenant": "org", "action": "block"}
    assert "Org hard" in denied["reason"]
    assert denied["suggested_model"] == "gpt-4o-mini"
    assert denied["source"] == "database"
    assert denied["period_end"]


def test_a_model_budget_applies_only_to_that_model(client_for, tree):
    _, team, _ = tree
    BudgetFactory(tenant=team, amount_nanos=1, action="block", model="gpt-4o")
    client = client_for(team, scopes=["ingest"])
    ingest("team", None, at=_recent(), provider="openai", model="gpt-4o")
    assert client.post("/api/v1/allowance/", {"model": "gpt-4o-2024-08-06", "provider": "openai"},
                       format="json").json()["allowed"] is False  # fmt: skip
    assert (
        client.post("/api/v1/allowance/", {"model": "gpt-4o-mini"}, format="json").json()["allowed"] is True
    )


def test_token_estimates_are_priced(client_for, tree):
    _, team, _ = tree
    BudgetFactory(tenant=team, amount_nanos=10**9, action="block")
    client = client_for(team, scopes=["ingest"])
    body = {"provider": "openai", "model": "gpt-4o", "estimated_input_tokens": 100_000,
            "estimated_output_tokens": 100_000}  # fmt: skip
    decision = client.post("/api/v1/allowance/", body, format="json").json()
    assert decision["estimated_cost_usd"] == "1.250000000"
    assert decision["allowed"] is False


def test_without_budgets_everything_is_allowed(client_for, tree):
    decision = client_for(None, scopes=["read"]).post("/api/v1/allowance/", {"tenant": "team"}, format="json")
    assert decision.json()["allowed"] is True
    assert decision.json()["budget"] is None
    missing = client_for(None, scopes=["read"]).post("/api/v1/allowance/", {}, format="json")
    assert missing.json()["error"]["code"] == "missing_tenant"


def test_redis_down_falls_back_to_the_database(client_for, tree, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    _, team, _ = tree
    BudgetFactory(tenant=team, amount_nanos=10**9, action="block")
    ingest("team", "2", at=_recent())
    decision = client_for(team, scopes=["ingest"]).post("/api/v1/allowance/", {}, format="json").json()
    assert (decision["allowed"], decision["source"], decision["fresh"]) == (False, "database", True)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("fail_mode", "allowed"), [("open", True), ("closed", False)])
def test_when_nothing_can_be_read_the_fail_mode_decides(settings, database_down, fail_mode, allowed):
    database_down()  # restore: the test needs the database to set up
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    team = TenantFactory(slug="team")
    BudgetFactory(tenant=team, amount_nanos=10**9, action="block", fail_mode=fail_mode)
    now = timezone.now()
    allowance_check(tenant_id=team.pk, provider="", model_id="", tags={}, estimated_cost_nanos=0, now=now)
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = "/nonexistent-directory/x.sqlite3"
    connection.settings_dict["PORT"] = "1"
    try:
        decision = allowance_check(tenant_id=team.pk, provider="", model_id="", tags={}, estimated_cost_nanos=0,
                                   now=now)  # fmt: skip
    finally:
        database_down()
    assert (decision.allowed, decision.source) == (allowed, "unavailable")
    assert f"fails {fail_mode}" in decision.reason


def test_an_allowance_for_an_unknown_tenant_is_a_documented_404(client_for, tree):
    """Found by schema fuzzing: the 404 for a tenant that does not exist (or is outside the key's
    scope) was not in the schema."""
    response = client_for(None, scopes=["read"]).post(
        "/api/v1/allowance/", {"tenant": "nobody"}, format="json"
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert_conforms_to_schema(response, "POST /api/v1/allowance/")
