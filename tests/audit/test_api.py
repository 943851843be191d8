"""GET /api/v1/audit-events/: admin scope, the caller's tenants only (fail closed), filters, pages."""

import pytest

from audit.models import AuditEvent
from budgets.models import Budget
from budgets.services import budget_save
from chargeback.models import PriceOverride
from chargeback.services import price_override_save
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree():
    org = TenantFactory(slug="org", kind="organization")
    team = TenantFactory(slug="team", parent=org)
    project = TenantFactory(slug="project", parent=team)
    sibling = TenantFactory(slug="sibling", parent=org)
    for tenant in (org, team, project, sibling):
        budget_save(
            budget=Budget(tenant=tenant, name=f"{tenant.slug} monthly", amount_nanos=10**9), actor="test"
        )
    price_override_save(
        override=PriceOverride(
            model="gpt-4o", valid_from="2026-01-01T00:00Z", input_per_mtok=1, output_per_mtok=2
        ),
        actor="test",
    )  # a global object
    return {"org": org, "team": team, "project": project, "sibling": sibling}


def _budget_events(client, query=""):
    response = client.get(f"/api/v1/audit-events/?action=budget.create{query}")
    assert response.status_code == 200, response.content
    return sorted(row["tenant"] for row in response.json()["results"])


def test_a_tenant_key_sees_only_its_tenant_and_descendants(client_for, tree):
    team_admin = client_for(tree["team"], scopes=["admin"])
    assert _budget_events(team_admin) == ["project", "team"]
    rows = team_admin.get("/api/v1/audit-events/").json()["results"]
    # Its own key's creation is visible too; the sibling's, the org's and global objects' are not.
    assert {row["tenant"] for row in rows} == {"team", "project"}
    assert not any(row["object_type"] == "chargeback.priceoverride" for row in rows)
    assert _budget_events(client_for(tree["sibling"], scopes=["admin"])) == ["sibling"]


def test_a_global_key_sees_everything_including_global_objects(client_for, tree):
    client = client_for(None, scopes=["admin"])
    assert _budget_events(client) == ["org", "project", "sibling", "team"]
    overrides = client.get("/api/v1/audit-events/?object_type=chargeback.priceoverride").json()["results"]
    assert [(row["action"], row["tenant"], row["actor"]) for row in overrides] == [
        ("price_override.create", None, "test")
    ]


def test_filtering_by_another_tenant_reveals_nothing(client_for, tree):
    team_admin = client_for(tree["team"], scopes=["admin"])
    assert _budget_events(team_admin, "&tenant=sibling") == []
    assert _budget_events(team_admin, "&tenant=org") == ["project", "team"]
    assert _budget_events(team_admin, "&tenant=project") == ["project"]


def test_the_audit_log_needs_the_admin_scope(client_for, tree):
    for scopes in (["read"], ["ingest"], ["ingest", "read"]):
        response = client_for(tree["team"], scopes=scopes).get("/api/v1/audit-events/")
        assert (response.status_code, response.json()["error"]["code"]) == (403, "scope_missing")
    response = client_for(tree["team"], scopes=["admin"]).post("/api/v1/audit-events/", {}, format="json")
    assert response.status_code == 405


def test_events_carry_the_change_and_page_with_a_cursor(client_for, tree):
    client = client_for(None, scopes=["admin"])
    first = client.get("/api/v1/audit-events/?action=budget.create&page_size=3").json()
    assert len(first["results"]) == 3 and first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    seen = [row["id"] for row in first["results"] + second["results"]]
    assert seen == sorted(seen, reverse=True)  # newest first
    event = AuditEvent.objects.get(action="budget.create", tenant=tree["team"])
    row = next(row for row in first["results"] + second["results"] if row["id"] == event.pk)
    assert row["before"] is None and row["after"]["name"] == "team monthly"
    assert (row["actor_type"], row["object_type"], row["object_id"]) == (
        "system",
        "budgets.budget",
        event.object_id,
    )


def test_a_page_size_above_the_maximum_is_clamped(client_for, tree, settings):
    client = client_for(None, scopes=["admin"])
    response = client.get("/api/v1/audit-events/?page_size=100000")
    assert response.status_code == 200
    assert len(response.json()["results"]) == AuditEvent.objects.count()  # fewer than the cap of 1000
