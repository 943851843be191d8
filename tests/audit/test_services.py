"""Each audited change writes exactly one audit event, with who, what and the values before and
after, whether it comes through a service call, the API or the Django admin."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from audit.models import AuditEvent
from audit.services import audit_record
from budgets.models import Budget, NotificationChannel
from budgets.services import (
    budget_delete,
    budget_save,
    notification_channel_delete,
    notification_channel_save,
)
from chargeback.models import AllocationRule, PriceOverride, Statement
from chargeback.services import (
    allocation_rule_delete,
    allocation_rule_save,
    price_override_delete,
    price_override_save,
    statement_finalize,
    statement_generate,
    statement_void,
)
from tenants.models import ApiKey, Tenant, TenantMembership
from tenants.services import (
    api_key_create,
    api_key_rename,
    api_key_revoke,
    tenant_delete,
    tenant_membership_delete,
    tenant_membership_save,
    tenant_save,
)
from tests.factories import (
    AllocationRuleFactory,
    ApiKeyFactory,
    BudgetFactory,
    BudgetThresholdFactory,
    PriceOverrideFactory,
    TenantFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return User.objects.create_superuser("finops", "finops@example.com", "a-long-password")


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def only_event(action: str) -> AuditEvent:
    """The one event of this action (the test fails if there are none or several)."""
    events = list(AuditEvent.objects.filter(action=action))
    assert len(events) == 1, [(event.action, event.object_repr) for event in AuditEvent.objects.all()]
    return events[0]


# Who


def test_the_actor_is_a_user_an_api_key_or_the_system(staff):
    team = TenantFactory(slug="team")
    api_key = ApiKeyFactory(tenant=team, scopes=["admin"])
    override = PriceOverrideFactory(tenant=team)
    by_user = audit_record(
        actor=staff, action="test.user", instance=override, tenant_id=team.pk, before=None, after={}
    )
    by_key = audit_record(
        actor=api_key, action="test.key", instance=override, tenant_id=team.pk, before=None, after={}
    )
    by_beat = audit_record(
        actor="beat", action="test.beat", instance=override, tenant_id=None, before=None, after={}
    )
    by_nobody = audit_record(
        actor=None, action="test.none", instance=override, tenant_id=None, before=None, after={}
    )
    assert (by_user.actor_type, by_user.actor_user, by_user.actor_label) == ("user", staff, "finops")
    assert (by_key.actor_type, by_key.actor_api_key, by_key.actor_label) == (
        "api_key", api_key, f"{api_key.prefix} ({api_key.name})",
    )  # fmt: skip
    assert (by_beat.actor_type, by_beat.actor_label) == ("system", "beat")
    assert (by_nobody.actor_type, by_nobody.actor_label) == ("system", "system")
    assert (by_user.object_type, by_user.object_id) == ("chargeback.priceoverride", str(override.pk))


# Price overrides


def test_price_override_create_update_delete(staff):
    team = TenantFactory(slug="team")
    override = PriceOverride(
        tenant=team, model="gpt-4o", valid_from=datetime(2026, 1, 1, tzinfo=UTC), input_per_mtok="2.5",
        output_per_mtok="10",
    )  # fmt: skip
    price_override_save(override=override, actor=staff)
    created = only_event("price_override.create")
    assert created.before is None
    assert created.after["input_per_mtok"] == "2.500000000"
    assert (created.after["tenant_id"], created.after["valid_from"]) == (team.pk, "2026-01-01T00:00:00+00:00")
    assert (created.tenant, created.actor_user, created.object_id) == (team, staff, str(override.pk))

    override.output_per_mtok = "12"
    price_override_save(override=override, actor=staff)
    updated = only_event("price_override.update")
    assert (updated.before["output_per_mtok"], updated.after["output_per_mtok"]) == (
        "10.000000000",
        "12.000000000",
    )
    assert {key for key in updated.after if updated.after[key] != updated.before[key]} == {"output_per_mtok"}

    price_override_save(override=override, actor=staff)  # nothing changed: nothing to record
    assert AuditEvent.objects.filter(action="price_override.update").count() == 1

    override_id = override.pk
    price_override_delete(override=override, actor=staff)
    deleted = only_event("price_override.delete")
    assert (deleted.object_id, deleted.after, deleted.before["output_per_mtok"]) == (
        str(override_id), None, "12.000000000",
    )  # fmt: skip


def test_the_admin_audits_price_override_changes(staff_client, staff):
    data = {"provider": "", "model": "gpt-4o", "valid_from_0": "2026-01-01", "valid_from_1": "00:00:00",
            "input_per_mtok": "2.5", "output_per_mtok": "10", "per_request": "0", "note": ""}  # fmt: skip
    response = staff_client.post("/admin/chargeback/priceoverride/add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    override = PriceOverride.objects.get()
    event = only_event("price_override.create")
    assert (event.actor_user, event.tenant, event.after["model"]) == (staff, None, "gpt-4o")

    response = staff_client.post(
        f"/admin/chargeback/priceoverride/{override.pk}/change/", {**data, "note": "negotiated"}
    )
    assert response.status_code == 302
    assert (only_event("price_override.update").before["note"], only_event("price_override.update").after["note"]) == (
        "", "negotiated",
    )  # fmt: skip

    response = staff_client.post(f"/admin/chargeback/priceoverride/{override.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert only_event("price_override.delete").before["note"] == "negotiated"
    assert not PriceOverride.objects.exists()


# Budgets and thresholds


def test_budget_create_update_with_thresholds_and_delete():
    team = TenantFactory(slug="team")
    api_key = ApiKeyFactory(tenant=team, scopes=["admin"])
    budget = Budget(tenant=team, name="Team monthly", amount_nanos=100 * 10**9)
    budget_save(budget=budget, thresholds=[{"percent": 80}], actor=api_key)
    created = only_event("budget.create")
    assert created.before is None
    assert created.after["thresholds"] == [{"percent": "80.00", "on_actual": True, "on_forecast": False}]
    assert (created.after["amount_nanos"], created.tenant, created.actor_api_key) == (
        100 * 10**9,
        team,
        api_key,
    )

    budget.amount_nanos = 200 * 10**9
    budget_save(
        budget=budget, thresholds=[{"percent": 80, "on_forecast": True}, {"percent": 100}], actor=api_key
    )
    updated = only_event("budget.update")
    assert (updated.before["amount_nanos"], updated.after["amount_nanos"]) == (100 * 10**9, 200 * 10**9)
    assert updated.before["thresholds"] == [{"percent": "80.00", "on_actual": True, "on_forecast": False}]
    assert updated.after["thresholds"] == [
        {"percent": "80.00", "on_actual": True, "on_forecast": True},
        {"percent": "100.00", "on_actual": True, "on_forecast": False},
    ]

    budget_delete(budget=budget, actor=api_key)
    deleted = only_event("budget.delete")
    assert (deleted.after, len(deleted.before["thresholds"]), deleted.tenant) == (None, 2, team)


def test_a_threshold_that_stays_keeps_its_row_and_alerts():
    budget = BudgetFactory()
    kept = BudgetThresholdFactory(budget=budget, percent=80)
    dropped = BudgetThresholdFactory(budget=budget, percent=90)
    budget_save(budget=budget, thresholds=[{"percent": "80.00", "on_forecast": True}, {"percent": "100"}])
    rows = {str(row.percent): row for row in budget.thresholds.all()}
    assert set(rows) == {"80.00", "100.00"}
    assert rows["80.00"].pk == kept.pk and rows["80.00"].on_forecast
    assert not budget.thresholds.filter(pk=dropped.pk).exists()


def test_the_budget_api_audits_with_the_calling_key(client_for):
    team = TenantFactory(slug="team")
    client = client_for(team, scopes=["admin"])
    body = {"tenant": "team", "name": "Team monthly", "amount_usd": "250", "thresholds": [{"percent": "80"}]}
    budget_id = client.post("/api/v1/budgets/", body, format="json").json()["id"]
    created = only_event("budget.create")
    assert (created.actor_type, created.object_id, created.after["name"]) == (
        "api_key",
        str(budget_id),
        "Team monthly",
    )
    client.patch(f"/api/v1/budgets/{budget_id}/", {"amount_usd": "300", "thresholds": []}, format="json")
    updated = only_event("budget.update")
    assert (updated.before["amount_nanos"], updated.after["amount_nanos"]) == (250 * 10**9, 300 * 10**9)
    assert (len(updated.before["thresholds"]), updated.after["thresholds"]) == (1, [])
    client.delete(f"/api/v1/budgets/{budget_id}/")
    assert only_event("budget.delete").before["name"] == "Team monthly"


def test_the_admin_saves_a_budget_and_its_thresholds_as_one_audited_change(staff_client, staff):
    team = TenantFactory(slug="team")
    form = {
        "tenant": team.pk, "name": "Team monthly", "amount_usd": "100", "period": "month", "week_start": "0",
        "provider": "", "model": "", "tag_key": "", "tag_value": "", "action": "notify", "fallback_model": "",
        "fail_mode": "open", "is_active": "on",
        "thresholds-TOTAL_FORMS": "2", "thresholds-INITIAL_FORMS": "0", "thresholds-MIN_NUM_FORMS": "0",
        "thresholds-MAX_NUM_FORMS": "1000",
        "thresholds-0-percent": "80", "thresholds-0-on_actual": "on",
        "thresholds-1-percent": "", "thresholds-1-on_actual": "on",
    }  # fmt: skip
    response = staff_client.post("/admin/budgets/budget/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    budget = Budget.objects.get()
    created = only_event("budget.create")
    assert (created.actor_user, created.after["amount_nanos"]) == (staff, 100 * 10**9)
    assert created.after["thresholds"] == [{"percent": "80.00", "on_actual": True, "on_forecast": False}]

    threshold = budget.thresholds.get()
    change = {
        **form, "amount_usd": "150", "thresholds-TOTAL_FORMS": "2", "thresholds-INITIAL_FORMS": "1",
        "thresholds-0-id": threshold.pk, "thresholds-0-budget": budget.pk, "thresholds-0-on_forecast": "on",
        "thresholds-1-percent": "100", "thresholds-1-budget": budget.pk,
    }  # fmt: skip
    response = staff_client.post(f"/admin/budgets/budget/{budget.pk}/change/", change)
    assert response.status_code == 302, response.content.decode()[:3000]
    updated = only_event("budget.update")
    assert (updated.before["amount_nanos"], updated.after["amount_nanos"]) == (100 * 10**9, 150 * 10**9)
    assert updated.after["thresholds"] == [
        {"percent": "80.00", "on_actual": True, "on_forecast": True},
        {"percent": "100.00", "on_actual": True, "on_forecast": False},
    ]
    assert budget.thresholds.get(percent=80).pk == threshold.pk  # kept, with its alerts

    response = staff_client.post(f"/admin/budgets/budget/{budget.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert only_event("budget.delete").before["amount_nanos"] == 150 * 10**9


# Allocation rules


def test_allocation_rule_create_update_delete(staff):
    scope = TenantFactory(slug="platform")
    rule = AllocationRuleFactory.build(scope=scope, target=TenantFactory(slug="acme", is_billable=True))
    allocation_rule_save(rule=rule, actor=staff)
    created = only_event("allocation_rule.create")
    assert (created.tenant, created.after["tag_value"], created.after["target_id"]) == (
        scope,
        "acme",
        rule.target_id,
    )

    rule.is_active = False
    allocation_rule_save(rule=rule, actor=staff)
    updated = only_event("allocation_rule.update")
    assert (updated.before["is_active"], updated.after["is_active"]) == (True, False)

    allocation_rule_delete(rule=rule, actor=staff)
    assert only_event("allocation_rule.delete").before["is_active"] is False


def test_the_admin_audits_allocation_rules(staff_client, staff):
    target = TenantFactory(slug="acme", is_billable=True)
    data = {"precedence": "10", "name": "acme", "tag_key": "customer", "tag_value": "acme", "target": target.pk,
            "is_active": "on"}  # fmt: skip
    assert staff_client.post("/admin/chargeback/allocationrule/add/", data).status_code == 302
    rule = AllocationRule.objects.get()
    event = only_event("allocation_rule.create")
    assert (event.actor_user, event.tenant, event.after["precedence"]) == (
        staff,
        None,
        10,
    )  # no scope: global
    staff_client.post(f"/admin/chargeback/allocationrule/{rule.pk}/change/", {**data, "precedence": "20"})
    assert only_event("allocation_rule.update").after["precedence"] == 20
    staff_client.post(
        "/admin/chargeback/allocationrule/",
        {"action": "delete_selected", "_selected_action": [rule.pk], "post": "yes"},
    )
    assert only_event("allocation_rule.delete").before["precedence"] == 20
    assert not AllocationRule.objects.exists()


# Notification channels


def test_notification_channel_create_update_delete_never_records_the_secret(staff):
    team = TenantFactory(slug="team")
    channel = NotificationChannel(
        tenant=team, name="on-call", kind="webhook", target="https://93.184.215.14/hook", secret="whsec-first"
    )
    notification_channel_save(channel=channel, actor=staff)
    created = only_event("notification_channel.create")
    assert created.after == {
        "tenant_id": team.pk, "name": "on-call", "kind": "webhook", "target": "https://93.184.215.14/hook",
        "is_active": True, "has_secret": True,
    }  # fmt: skip

    channel.secret = "whsec-second"
    notification_channel_save(channel=channel, actor=staff)
    rotated = only_event("notification_channel.update")
    assert rotated.after["secret_changed"] is True and rotated.before["has_secret"] is True

    notification_channel_delete(channel=channel, actor=staff)
    assert only_event("notification_channel.delete").before["name"] == "on-call"
    assert not any("whsec" in str((event.before, event.after)) for event in AuditEvent.objects.all())


def test_the_channel_api_and_admin_audit_channel_changes(client_for, staff_client, staff):
    team = TenantFactory(slug="team")
    client = client_for(team, scopes=["admin"])
    body = {"tenant": "team", "name": "mail", "kind": "email", "target": "finops@example.com"}
    channel_id = client.post("/api/v1/notification-channels/", body, format="json").json()["id"]
    assert only_event("notification_channel.create").actor_type == "api_key"
    client.patch(f"/api/v1/notification-channels/{channel_id}/", {"is_active": False}, format="json")
    assert only_event("notification_channel.update").after["is_active"] is False

    data = {"tenant": team.pk, "name": "mail", "kind": "email", "target": "cto@example.com", "secret": ""}
    response = staff_client.post(f"/admin/budgets/notificationchannel/{channel_id}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    by_staff = AuditEvent.objects.filter(action="notification_channel.update", actor_user=staff).get()
    assert (by_staff.before["target"], by_staff.after["target"]) == ("finops@example.com", "cto@example.com")
    client.delete(f"/api/v1/notification-channels/{channel_id}/")
    assert only_event("notification_channel.delete").actor_type == "api_key"


# Statements


@pytest.fixture
def draft():
    tenant = TenantFactory(slug="acme", is_billable=True)
    return statement_generate(tenant=tenant, period_key="2026-10")


def test_statement_finalize_and_void(draft, staff):
    finalized = statement_finalize(statement_id=draft.pk, actor=staff)
    event = only_event("statement.finalize")
    assert (event.before["status"], event.before["number"]) == ("draft", None)
    assert (event.after["status"], event.after["number"]) == ("finalized", finalized.number)
    assert event.after["pdf_sha256"] == finalized.pdf_sha256 and event.tenant == draft.tenant

    statement_finalize(statement_id=draft.pk, actor=staff)  # already final: no change, no event
    assert AuditEvent.objects.filter(action="statement.finalize").count() == 1

    statement_void(statement_id=draft.pk, reason="wrong markup", actor=staff)
    voided = only_event("statement.void")
    assert (voided.before["status"], voided.after["status"], voided.after["void_reason"]) == (
        "finalized", "void", "wrong markup",
    )  # fmt: skip


def test_the_statement_api_and_admin_audit_finalize_and_void(client_for, staff_client, staff, draft):
    other = statement_generate(tenant=TenantFactory(slug="globex", is_billable=True), period_key="2026-10")
    client = client_for(None, scopes=["admin"])
    assert client.post(f"/api/v1/statements/{draft.pk}/finalize").status_code == 200
    assert (
        client.post(f"/api/v1/statements/{draft.pk}/void", {"reason": "typo"}, format="json").status_code
        == 200
    )
    assert only_event("statement.finalize").actor_type == "api_key"
    assert only_event("statement.void").after["void_reason"] == "typo"
    staff_client.post("/admin/chargeback/statement/", {"action": "finalize", "_selected_action": [other.pk]})
    by_staff = AuditEvent.objects.get(action="statement.finalize", actor_user=staff)
    assert by_staff.object_id == str(other.pk)
    assert Statement.objects.get(pk=other.pk).status == "finalized"


# API keys


def test_api_key_create_rename_and_revoke_never_record_the_secret(staff):
    team = TenantFactory(slug="team")
    api_key, secret = api_key_create(name="gateway", scopes=["ingest"], tenant=team, actor=staff)
    created = only_event("api_key.create")
    assert created.before is None
    assert created.after == {
        "name": "gateway", "prefix": api_key.prefix, "tenant_id": team.pk, "scopes": ["ingest"], "is_active": True,
    }  # fmt: skip
    api_key_rename(api_key=api_key, name="gateway eu", actor=staff)
    assert only_event("api_key.update").after["name"] == "gateway eu"
    api_key_revoke(api_key=api_key, actor=staff)
    revoked = only_event("api_key.revoke")
    assert (revoked.before["is_active"], revoked.after["is_active"], revoked.tenant) == (True, False, team)
    api_key_revoke(api_key=api_key, actor=staff)  # already revoked: nothing happens
    assert AuditEvent.objects.filter(action="api_key.revoke").count() == 1
    stored = str(list(AuditEvent.objects.values()))
    assert secret not in stored and api_key.secret_hash not in stored


def test_the_admin_and_the_command_audit_api_keys(staff_client, staff, capsys):
    team = TenantFactory(slug="team")
    response = staff_client.post(
        "/admin/tenants/apikey/add/", {"name": "gw", "tenant": team.pk, "scopes": ["read"]}
    )
    assert response.status_code == 302
    api_key = ApiKey.objects.get()
    assert only_event("api_key.create").actor_user == staff
    staff_client.post("/admin/tenants/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]})
    assert only_event("api_key.revoke").actor_user == staff
    # Switching a revoked key back on is not possible in the admin: is_active is read-only there.
    staff_client.post(f"/admin/tenants/apikey/{api_key.pk}/change/", {"name": "gw", "is_active": "on"})
    assert not ApiKey.objects.get(pk=api_key.pk).is_active

    call_command("create_api_key", "--scopes", "read", "--tenant", "team")
    by_command = AuditEvent.objects.filter(action="api_key.create").exclude(actor_user=staff).get()
    assert (by_command.actor_type, by_command.actor_label) == ("system", "manage.py create_api_key")


def test_a_failed_change_records_nothing():
    team = TenantFactory(slug="team")
    with pytest.raises(Exception):  # noqa: B017 - any validation error
        budget_save(budget=Budget(tenant=team, name="x", amount_nanos=0), actor="test")
    assert not AuditEvent.objects.filter(action__startswith="budget.").exists()


# Tenants and who may see them


def test_tenant_create_update_delete(staff):
    org = TenantFactory(slug="acme")
    tenant = tenant_save(tenant=Tenant(slug="search", name="Search", parent=org), actor=staff)
    created = only_event("tenant.create")
    # A tenant's events belong to the tenant itself, so that its admins see who changed it.
    assert (created.tenant, created.actor_user, created.after["parent_id"]) == (tenant, staff, org.pk)

    tenant.markup_percent = Decimal("12.5")
    tenant_save(tenant=tenant, actor=staff)
    updated = only_event("tenant.update")
    assert (updated.before["markup_percent"], updated.after["markup_percent"]) == (None, "12.5000")
    tenant_save(tenant=tenant, actor=staff)  # nothing changed: nothing recorded
    assert AuditEvent.objects.filter(action="tenant.update").count() == 1

    BudgetFactory(tenant=tenant)
    BudgetFactory(tenant=tenant)
    TenantMembership.objects.create(user=staff, tenant=tenant)
    tenant_delete(tenant=tenant, actor=staff)
    deleted = only_event("tenant.delete")
    # The tenant is gone: its events, this one included, are global now; the event says what went
    # with it.
    assert (deleted.tenant, deleted.before["slug"]) == (None, "search")
    assert deleted.before["deleted_with_it"] == {"budgets.budget": 2, "tenants.tenantmembership": 1}
    assert set(AuditEvent.objects.filter(object_type="tenants.tenant").values_list("tenant", flat=True)) == {
        None
    }


def test_the_admin_audits_tenant_changes(staff_client, staff):
    data = {"slug": "globex", "name": "Globex", "kind": "team", "time_zone": "UTC", "billing_currency": "USD",
            "billing_email": "", "markup_percent": "", "is_active": "on"}  # fmt: skip
    assert staff_client.post("/admin/tenants/tenant/add/", data).status_code == 302
    tenant = Tenant.objects.get(slug="globex")
    assert (only_event("tenant.create").actor_user, only_event("tenant.create").tenant) == (staff, tenant)
    response = staff_client.post(
        f"/admin/tenants/tenant/{tenant.pk}/change/", {**data, "markup_percent": "5"}
    )
    assert response.status_code == 302
    assert only_event("tenant.update").after["markup_percent"] == "5.0000"
    staff_client.post(
        "/admin/tenants/tenant/",
        {"action": "delete_selected", "_selected_action": [tenant.pk], "post": "yes"},
    )
    assert only_event("tenant.delete").before["markup_percent"] == "5.0000"
    assert not Tenant.objects.filter(slug="globex").exists()


def test_memberships_are_audited_in_services_and_the_admin(staff_client, staff):
    team = TenantFactory(slug="team")
    lead = User.objects.create_user("lead", password="a-long-password")
    membership = tenant_membership_save(membership=TenantMembership(user=lead, tenant=team), actor=staff)
    created = only_event("tenant_membership.create")
    assert (created.tenant, created.after) == (team, {"user_id": lead.pk, "tenant_id": team.pk})
    tenant_membership_delete(membership=membership, actor=staff)
    assert only_event("tenant_membership.delete").before["user_id"] == lead.pk

    other = TenantFactory(slug="other")
    response = staff_client.post(
        "/admin/tenants/tenantmembership/add/", {"user": lead.pk, "tenant": other.pk}
    )
    assert response.status_code == 302
    assert (
        AuditEvent.objects.filter(action="tenant_membership.create", tenant=other, actor_user=staff).count()
        == 1
    )
    membership = TenantMembership.objects.get()
    staff_client.post(f"/admin/tenants/tenantmembership/{membership.pk}/delete/", {"post": "yes"})
    assert AuditEvent.objects.filter(action="tenant_membership.delete", tenant=other).count() == 1
    assert not TenantMembership.objects.exists()
