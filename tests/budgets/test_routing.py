"""Routing policies at the allowance check: rule conditions, precedence between rules and policies,
the stable A/B split, the answer's routing block (fast path = serializer), and the policy API with
tenant isolation."""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from audit.models import AuditEvent
from budgets.models import RoutingPolicy
from budgets.routing_selectors import (
    ARM_CONTROL,
    ARM_POLICY,
    routing_arm,
    routing_policies_forget,
)
from budgets.routing_services import routing_policy_save
from budgets.selectors import AllowanceDecision, allowance_check, budget_definitions_forget
from budgets.serializers import AllowanceResponseSerializer, allowance_response_data
from tests.budgets.test_services import ingest
from tests.factories import BudgetFactory, TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_definitions(settings):
    settings.REDIS_URL = ""
    budget_definitions_forget()
    routing_policies_forget()
    yield
    budget_definitions_forget()
    routing_policies_forget()


@pytest.fixture
def tree():
    org = TenantFactory(slug="org", kind="organization")
    team = TenantFactory(slug="team", parent=org)
    other = TenantFactory(slug="other-org", kind="organization")
    return org, team, other


def policy(tenant, rules, **fields):
    return routing_policy_save(
        policy=RoutingPolicy(tenant=tenant, name=fields.pop("name", "p"), **fields), rules=rules
    )


def check(tenant, *, model="gpt-4o", tags=None, input_tokens=None, cost=0):
    return allowance_check(
        tenant_id=tenant.pk,
        provider="openai",
        model_id=model,
        tags=tags or {},
        estimated_cost_nanos=cost,
        now=timezone.now(),
        estimated_input_tokens=input_tokens,
    )


def test_without_policies_nothing_is_routed(tree):
    decision = check(tree[1])
    assert decision.routing is None and decision.suggested_model == ""


def test_a_tag_rule_suggests_its_model_and_names_the_rule(tree):
    org, team, _ = tree
    made = policy(org, [{"tag_key": "feature", "tag_value": "search", "target_model": "gpt-4o-mini"}])
    rule = made.rules.get()
    decision = check(team, tags={"feature": "search"})
    assert decision.allowed and decision.suggested_model == "gpt-4o-mini"
    routing = decision.routing
    assert (routing.policy_id, routing.rule_id, routing.rule_position, routing.arm) == (
        made.pk,
        rule.pk,
        1,
        ARM_POLICY,
    )
    assert routing.rule_description == "feature=search -> gpt-4o-mini"
    assert routing.tags == {"routing_policy": str(made.pk), "routing_arm": "policy"}
    assert check(team, tags={"feature": "chat"}).routing is None


def test_input_token_rule_needs_an_estimate_below_the_limit(tree):
    org, team, _ = tree
    policy(org, [{"max_input_tokens": 1000, "target_model": "gpt-4o-mini"}])
    assert check(team, input_tokens=999).suggested_model == "gpt-4o-mini"
    assert check(team, input_tokens=1000).routing is None  # "under K": 1000 is not under 1000
    assert check(team).routing is None  # no estimate, no match


def test_budget_rule_applies_from_the_percent_used(tree):
    org, team, _ = tree
    BudgetFactory(tenant=org, amount_nanos=10 * 10**9)  # $10, notify only
    policy(
        org,
        [
            {
                "tag_key": "feature",
                "tag_value": "search",
                "min_budget_percent": "80",
                "target_model": "gpt-4o-mini",
            }
        ],
    )
    ingest("team", "7.99")
    assert check(team, tags={"feature": "search"}).routing is None  # 79.9 %
    ingest("team", "0.01", event_id="second")
    decision = check(team, tags={"feature": "search"})  # exactly 80 %
    assert decision.routing is not None and decision.suggested_model == "gpt-4o-mini"
    assert decision.spent_nanos == 8 * 10**9


def test_budget_rule_does_not_hold_without_a_budget(tree):
    org, team, _ = tree
    policy(org, [{"min_budget_percent": "0", "target_model": "gpt-4o-mini"}])
    assert check(team).routing is None


def test_rules_in_position_order_and_policies_by_precedence_then_nearness(tree):
    org, team, _ = tree
    # On the organisation: two rules, the later position listed first.
    org_policy = policy(
        org,
        [
            {"position": 2, "target_model": "gpt-4o-mini"},
            {"position": 1, "from_model": "gpt-4o", "target_model": "gpt-4.1-mini"},
        ],
        precedence=10,
    )
    assert check(team).routing.rule_position == 1 and check(team).suggested_model == "gpt-4.1-mini"
    assert check(team, model="o4-mini").routing.rule_position == 2
    # A team policy of equal precedence is nearer, and wins.
    team_policy = policy(team, [{"target_model": "claude-3-5-haiku-latest"}], precedence=10)
    routing_policies_forget()
    assert check(team).routing.policy_id == team_policy.pk
    # Lower precedence beats nearness.
    org_policy.precedence = 5
    routing_policy_save(policy=org_policy)
    assert check(team).routing.policy_id == org_policy.pk
    # An inactive policy is skipped; another tenant's never applies.
    org_policy.is_active = False
    routing_policy_save(policy=org_policy)
    assert check(team).routing.policy_id == team_policy.pk
    assert check(org).routing is None


def test_ab_arm_is_a_stable_hash_of_policy_and_tag_value():
    for value in ("alice", "bob", "", "ü"):
        digest = hashlib.sha256(f"42:{value}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        for share in (0, 2500, 5000, 9999, 10000):
            expected = ARM_POLICY if fraction < share / 10000 else ARM_CONTROL
            assert routing_arm(42, value, share) == expected
    arms = [routing_arm(7, f"user-{index}", 3000) for index in range(4000)]
    assert 0.27 < arms.count(ARM_POLICY) / len(arms) < 0.33


def test_ab_policy_splits_by_the_tag_and_tags_both_arms(tree):
    org, team, _ = tree
    made = policy(
        org,
        [{"tag_key": "feature", "tag_value": "chat", "target_model": "gpt-4o-mini"}],
        share=Decimal("0.5"),
        split_tag="user",
    )
    seen = {}
    for index in range(40):
        user = f"user-{index}"
        decision = check(team, tags={"feature": "chat", "user": user})
        expected = routing_arm(made.pk, user, 5000)
        assert decision.routing.arm == expected
        assert decision.routing.tags == {"routing_policy": str(made.pk), "routing_arm": expected}
        assert decision.suggested_model == ("gpt-4o-mini" if expected == ARM_POLICY else "")
        # The same user always lands in the same arm.
        assert check(team, tags={"feature": "chat", "user": user}).routing.arm == expected
        seen[expected] = True
    assert set(seen) == {ARM_POLICY, ARM_CONTROL}
    # Calls without the split tag belong to neither arm: the policy leaves them alone.
    assert check(team, tags={"feature": "chat"}).routing is None


def test_a_denying_budgets_fallback_goes_before_the_policy(tree):
    org, team, _ = tree
    BudgetFactory(tenant=org, amount_nanos=10**9, action="block", fallback_model="gemini-2.5-flash")
    policy(org, [{"target_model": "gpt-4o-mini"}])
    decision = check(team, cost=2 * 10**9)
    assert not decision.allowed and decision.suggested_model == "gemini-2.5-flash"
    assert decision.routing.model == "gpt-4o-mini"
    assert check(team, cost=1).suggested_model == "gpt-4o-mini"


def test_definitions_are_cached_until_saved_through_the_service(tree, settings):
    org, team, _ = tree
    settings.BUDGET_DEFINITION_CACHE_SECONDS = 3600
    made = policy(org, [{"target_model": "gpt-4o-mini"}])
    assert check(team).suggested_model == "gpt-4o-mini"
    RoutingPolicy.objects.filter(pk=made.pk).update(is_active=False)  # behind the service's back
    assert check(team).suggested_model == "gpt-4o-mini"
    routing_policy_save(policy=RoutingPolicy.objects.get(pk=made.pk))
    assert check(team).routing is None


def test_the_response_fast_path_equals_the_serializer_with_routing(tree):
    org, team, _ = tree
    policy(
        org, [{"tag_key": "feature", "tag_value": "chat", "target_model": "gpt-4o-mini"}], name="Chat to mini"
    )
    decision = check(team, tags={"feature": "chat"})
    decision.estimated_cost_nanos = 123
    expected = AllowanceResponseSerializer(decision).data
    data = allowance_response_data(decision)
    assert data == expected
    assert JSONRenderer().render(data) == JSONRenderer().render(expected)
    assert data["routing"]["policy_name"] == "Chat to mini" and data["routing"]["arm"] == "policy"
    plain = AllowanceDecision(True, "No budget applies.", None, None, None, None, "", "none", True)
    plain.estimated_cost_nanos = 0
    assert allowance_response_data(plain) == AllowanceResponseSerializer(plain).data


# --- over HTTP ------------------------------------------------------------------------------------


def test_allowance_api_returns_the_routing_and_uses_the_input_estimate(client_for, tree):
    org, team, _ = tree
    made = policy(org, [{"max_input_tokens": 500, "target_model": "gpt-4o-mini"}])
    client = client_for(team, scopes=["ingest"])
    body = {
        "model": "gpt-4o",
        "provider": "openai",
        "estimated_input_tokens": 200,
        "estimated_output_tokens": 10,
    }
    answer = client.post("/api/v1/allowance/", body, format="json").json()
    assert answer["suggested_model"] == "gpt-4o-mini"
    assert answer["routing"]["policy_id"] == made.pk and answer["routing"]["rule_description"] == (
        "input < 500 tokens -> gpt-4o-mini"
    )
    assert answer["routing"]["tags"] == {"routing_policy": str(made.pk), "routing_arm": "policy"}
    body["estimated_input_tokens"] = 900
    assert client.post("/api/v1/allowance/", body, format="json").json()["routing"] is None


def test_policy_crud_over_the_api(client_for, tree):
    team = tree[1]
    client = client_for(team, scopes=["admin"])
    body = {
        "tenant": "team",
        "name": "Short prompts to mini",
        "share": "0.25",
        "split_tag": "user",
        "rules": [
            {"tag_key": "feature", "tag_value": "search", "min_budget_percent": "80", "target_model": "openai/gpt-4o-mini",
             "target_provider": "openai"},
            {"max_input_tokens": 1000, "from_model": "gpt-4o", "target_model": "gpt-4o-mini"},
        ],
    }  # fmt: skip
    created = client.post("/api/v1/routing-policies/", body, format="json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert [rule["position"] for rule in data["rules"]] == [1, 2]
    assert data["rules"][0]["target_model"] == "gpt-4o-mini" and data["share"] == "0.2500"
    assert data["rules"][0]["description"] == "feature=search, budget >= 80% used -> gpt-4o-mini"
    policy_id = data["id"]
    patched = client.patch(
        f"/api/v1/routing-policies/{policy_id}/",
        {"share": "1", "rules": [{"target_model": "o4-mini"}]},
        format="json",
    )
    assert patched.status_code == 200, patched.content
    assert [rule["target_model"] for rule in patched.json()["rules"]] == ["o4-mini"]
    assert client.get("/api/v1/routing-policies/").json()["count"] == 1
    assert client.delete(f"/api/v1/routing-policies/{policy_id}/").status_code == 204
    assert not RoutingPolicy.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"share": "0.5"}, "split_tag"),
        ({"share": "1.5"}, "share"),
        ({"rules": []}, "rules"),
        ({"rules": [{"tag_key": "feature", "target_model": "x"}]}, "rules"),
        ({"rules": [{"position": 1, "target_model": "a"}, {"position": 1, "target_model": "b"}]}, "rules"),
        ({"tenant": "other-org"}, "tenant"),
    ],
)
def test_invalid_policies_are_400(client_for, tree, change, field):
    body = {"tenant": "team", "name": "p", "rules": [{"target_model": "gpt-4o-mini"}], **change}
    response = client_for(tree[1], scopes=["admin"]).post("/api/v1/routing-policies/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]


def test_policies_are_isolated_between_tenants_and_writes_need_admin(client_for, tree):
    org, team, other = tree
    mine = policy(team, [{"target_model": "gpt-4o-mini"}])
    theirs = policy(other, [{"target_model": "gpt-4o-mini"}])
    reader = client_for(team, scopes=["read"])
    assert [item["id"] for item in reader.get("/api/v1/routing-policies/").json()["results"]] == [mine.pk]
    assert reader.get(f"/api/v1/routing-policies/{theirs.pk}/").status_code == 404
    assert reader.get(f"/api/v1/routing-policies/{mine.pk}/").status_code == 200
    denied = reader.patch(f"/api/v1/routing-policies/{mine.pk}/", {"name": "x"}, format="json")
    assert denied.json()["error"]["code"] == "scope_missing"
    admin = client_for(team, scopes=["admin"])
    assert admin.delete(f"/api/v1/routing-policies/{theirs.pk}/").status_code == 404
    assert (
        admin.patch(f"/api/v1/routing-policies/{theirs.pk}/", {"name": "x"}, format="json").status_code == 404
    )
    assert RoutingPolicy.objects.filter(pk=theirs.pk, name="p").exists()
    # An ancestor's policy applies to the team's calls, but the team's key cannot see or change it.
    org_policy = policy(org, [{"target_model": "o4-mini"}], precedence=1)
    assert reader.get(f"/api/v1/routing-policies/{org_policy.pk}/").status_code == 404
    assert json.dumps(check(team).routing.policy_id) == str(org_policy.pk)


def test_active_from_defaults_to_now(tree):
    made = policy(tree[0], [{"target_model": "gpt-4o-mini"}])
    assert abs(made.active_from - datetime.now(UTC)) < timedelta(minutes=1)


def test_the_admin_edits_policies_with_their_rules(client, tree, settings):
    from django.contrib.auth.models import User

    org, team, _ = tree
    settings.BUDGET_DEFINITION_CACHE_SECONDS = 3600
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "a-long-password"))
    made = policy(org, [{"target_model": "gpt-4o-mini"}], name="Old")
    assert check(team).suggested_model == "gpt-4o-mini"  # cached now
    for url in ("/admin/budgets/routingpolicy/", "/admin/budgets/routingpolicy/add/",
                f"/admin/budgets/routingpolicy/{made.pk}/change/"):  # fmt: skip
        assert client.get(url).status_code == 200, url
    rule = made.rules.get()
    form = {
        "tenant": org.pk, "name": "Renamed", "precedence": 100, "share": "1", "split_tag": "",
        "active_from_0": "2026-01-01", "active_from_1": "00:00:00", "is_active": "on",
        "rules-TOTAL_FORMS": 1, "rules-INITIAL_FORMS": 1, "rules-MIN_NUM_FORMS": 0, "rules-MAX_NUM_FORMS": 1000,
        "rules-0-id": rule.pk, "rules-0-policy": made.pk, "rules-0-position": 1, "rules-0-target_model": "o4-mini",
    }  # fmt: skip
    response = client.post(f"/admin/budgets/routingpolicy/{made.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    assert made.rules.get().target_model == "o4-mini"
    assert check(team).suggested_model == "o4-mini"  # the admin forgot the cached definitions
    # One audited change for the policy and its rules, by the signed-in user.
    [event] = AuditEvent.objects.filter(action="routing_policy.update")
    assert event.actor_label == "admin" and event.object_id == str(made.pk)
    assert (event.before["name"], event.after["name"]) == ("Old", "Renamed")
    assert [rule["target_model"] for rule in event.before["rules"]] == ["gpt-4o-mini"]
    assert [rule["target_model"] for rule in event.after["rules"]] == ["o4-mini"]

    response = client.post(f"/admin/budgets/routingpolicy/{made.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not RoutingPolicy.objects.filter(pk=made.pk).exists()
    assert AuditEvent.objects.get(action="routing_policy.delete").before["name"] == "Renamed"


def test_the_api_audits_policy_changes_with_the_calling_key(client_for, tree):
    _, team, _ = tree
    client = client_for(team, scopes=["admin"])
    body = {"tenant": team.slug, "name": "Mini for search", "rules": [{"target_model": "gpt-4o-mini"}]}
    created = client.post("/api/v1/routing-policies/", body, format="json")
    assert created.status_code == 201, created.content
    policy_id = created.json()["id"]
    assert (
        client.patch(f"/api/v1/routing-policies/{policy_id}/", {"name": "Mini"}, format="json").status_code
        == 200
    )
    assert client.delete(f"/api/v1/routing-policies/{policy_id}/").status_code == 204
    events = AuditEvent.objects.filter(object_type="budgets.routingpolicy").order_by("pk")
    assert [event.action for event in events] == [
        "routing_policy.create",
        "routing_policy.update",
        "routing_policy.delete",
    ]
    assert {event.tenant_id for event in events} == {team.pk}
    assert {event.actor_type for event in events} == {AuditEvent.ActorType.API_KEY}
    assert events[0].before is None and events[0].after["rules"][0]["target_model"] == "gpt-4o-mini"
    assert (events[1].before["name"], events[1].after["name"]) == ("Mini for search", "Mini")
