"""The cost optimisation API: scopes, the JSON/CSV/PDF shapes, and tenant isolation on every endpoint."""

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from pypdf import PdfReader

from budgets.models import RoutingPolicy
from budgets.routing_services import routing_policy_save
from chargeback.services import usage_records_ingest
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    "/api/v1/optimisation/costliest/",
    "/api/v1/optimisation/caching/",
    "/api/v1/optimisation/what-if/?model=gpt-4o-mini",
    "/api/v1/optimisation/savings/",
    "/api/v1/optimisation/savings/csv",
    "/api/v1/optimisation/savings/pdf",
]


@pytest.fixture
def tree():
    org = TenantFactory(slug="org", kind="organization")
    team_a = TenantFactory(slug="team-a", parent=org)
    team_b = TenantFactory(slug="team-b", parent=org)
    other = TenantFactory(slug="other-org", kind="organization")
    return {"org": org, "team-a": team_a, "team-b": team_b, "other-org": other}


def _calls(tenant: str, feature: str, *, prefix: str, hours_ago: int = 5) -> list[dict]:
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    calls = []
    for index, (model, input_tokens) in enumerate([("gpt-4o", 20_000)] * 3 + [("gpt-4o-mini", 1_000)]):
        calls.append(
            {
                "event_id": f"{prefix}-{index}",
                "timestamp": (now - timedelta(hours=hours_ago - index % 2)).isoformat(),
                "tenant": tenant,
                "provider": "openai",
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": 400,
                "latency_ms": 900,
                "prompt_hash": f"{prefix}-faq" if model == "gpt-4o" else None,
                "tags": {"feature": feature, "prompt_template": f"{feature}-v1"},
            }
        )
    return calls


@pytest.fixture
def usage(tree):
    items = _calls("team-a", "chat", prefix="a") + _calls("other-org", "secret-feature", prefix="o")
    result = usage_records_ingest(items=[json.dumps(item).encode() for item in items], scope_tenant_ids=None)
    assert result.accepted == len(items), result.errors


@pytest.fixture
def policy(tree):
    return routing_policy_save(
        policy=RoutingPolicy(
            tenant=tree["other-org"],
            name="Secret policy",
            share=Decimal("0.5"),
            split_tag="user",
            active_from=timezone.now() - timedelta(days=2),
        ),
        rules=[{"target_model": "gpt-4o-mini"}],
    )


@pytest.mark.parametrize("url", [*ENDPOINTS, "/api/v1/routing-policies/1/report"])
def test_every_endpoint_needs_a_key_with_the_read_scope(client_for, api_client, tree, url):
    assert api_client.get(url).status_code == 401
    response = client_for(tree["org"], scopes=["ingest"]).get(url)
    assert response.status_code == 403 and response.json()["error"]["code"] == "scope_missing"


def test_reports_for_the_organisation(client_for, tree, usage):
    client = client_for(tree["org"], scopes=["read"])
    costliest = client.get(ENDPOINTS[0]).json()
    assert [
        (row["feature"], row["model"], row["prompt_template"], row["requests"]) for row in costliest["rows"]
    ] == [
        ("chat", "gpt-4o", "chat-v1", 3),
        ("chat", "gpt-4o-mini", "chat-v1", 1),
    ]
    assert isinstance(costliest["total_list_cost_usd"], str) and costliest["scope"]["feature"] is None
    caching = client.get(ENDPOINTS[1]).json()
    assert [prompt["prompt_hash"] for prompt in caching["exact_cache"]["prompts"]] == ["a-faq"]
    assert caching["exact_cache"]["repeated_requests"] == 2
    what_if = client.get(ENDPOINTS[2] + "&feature=chat").json()
    assert what_if["requests"] == 4 and Decimal(what_if["savings_usd"]) > 0
    assert what_if["target"] == {"provider": "openai", "model": "gpt-4o-mini", "used_in_scope": True}
    savings = client.get(ENDPOINTS[3]).json()
    kinds = {entry["kind"] for entry in savings["opportunities"]}
    assert {"exact_cache", "model_substitution"} <= kinds
    titles = [entry["title"] for entry in savings["opportunities"]]
    assert "Move chat from gpt-4o to gpt-4o-mini" in titles
    rows = list(csv.DictReader(io.StringIO(client.get(ENDPOINTS[4]).content.decode())))
    assert [row["title"] for row in rows] == titles
    # (Monthly figures move with the clock between two requests; a period's savings do not.)
    assert [row["period_savings_usd"] for row in rows] == [
        entry["period_savings_usd"] for entry in savings["opportunities"]
    ]
    pdf = client.get(ENDPOINTS[5])
    assert pdf["Content-Type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Savings opportunities" in text and "Move chat from gpt-4o to gpt-4o-mini" in text
    assert "secret-feature" not in text


def test_each_endpoint_shows_only_the_keys_tenants(client_for, tree, usage, policy):
    outsider = client_for(tree["team-b"], scopes=["read"])
    for url in (ENDPOINTS[0], ENDPOINTS[0] + "?tenant=org", ENDPOINTS[0] + "?tenant=other-org"):
        assert outsider.get(url).json()["rows"] == []
    caching = outsider.get(ENDPOINTS[1] + "?tenant=other-org").json()["exact_cache"]
    assert caching["prompts"] == [] and caching["requests_with_prompt_hash"] == 0
    assert outsider.get(ENDPOINTS[2]).json()["requests"] == 0
    assert outsider.get(ENDPOINTS[3]).json()["opportunities"] == []
    assert outsider.get(ENDPOINTS[4]).content.decode().strip().count("\n") == 0  # the header only
    pdf = outsider.get(ENDPOINTS[5]).content
    assert "No opportunities" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert outsider.get(f"/api/v1/routing-policies/{policy.pk}/report").status_code == 404
    # The organisation's key does not see the other organisation's usage or policy either.
    org = client_for(tree["org"], scopes=["read"])
    assert all(row["feature"] != "secret-feature" for row in org.get(ENDPOINTS[0]).json()["rows"])
    assert org.get(f"/api/v1/routing-policies/{policy.pk}/report").status_code == 404
    assert "routing_rollout" not in {entry["kind"] for entry in org.get(ENDPOINTS[3]).json()["opportunities"]}
    # Its owner does.
    owner = client_for(tree["other-org"], scopes=["read"])
    report = owner.get(f"/api/v1/routing-policies/{policy.pk}/report")
    assert report.status_code == 200 and report.json()["policy"]["name"] == "Secret policy"
    assert owner.get(ENDPOINTS[0]).json()["rows"][0]["feature"] == "secret-feature"


def test_bad_queries_are_400_with_a_code(client_for, tree):
    client = client_for(tree["org"], scopes=["read"])
    cases = [
        ("/api/v1/optimisation/what-if/", "validation_error"),
        ("/api/v1/optimisation/what-if/?model=no-such-model-xyz", "unpriced_model"),
        ("/api/v1/optimisation/costliest/?start=2026-05-01&end=2026-04-01", "invalid_range"),
        ("/api/v1/optimisation/caching/?target_cached_share=2", "validation_error"),
        ("/api/v1/optimisation/savings/?start=yesterday", "validation_error"),
    ]
    for url, code in cases:
        response = client.get(url)
        assert response.status_code == 400, (url, response.content)
        assert response.json()["error"]["code"] == code, url
