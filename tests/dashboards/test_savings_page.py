"""The Savings page: sign-in, the ranked opportunities (the savings report's figures), scope per
person, CSV and PDF downloads."""

import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from pypdf import PdfReader

from chargeback.services import usage_records_ingest
from dashboards import formatting
from insights.optimisation_selectors import optimisation_scope_for, savings_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def repeated(organisation):
    """Repeated prompts on gpt-4o for team-a's chat, and team-b's chat on gpt-4o-mini."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    items = [
        {
            "event_id": f"r{index}",
            "timestamp": (now - timedelta(hours=index + 1)).isoformat(),
            "tenant": "team-a" if index < 4 else "team-b",
            "provider": "openai",
            "model": "gpt-4o" if index < 4 else "gpt-4o-mini",
            "input_tokens": 30_000,
            "output_tokens": 500,
            "prompt_hash": "faq-1" if index < 4 else None,
            "tags": {"feature": "chat"},
        }
        for index in range(6)
    ] + [
        {
            "event_id": "secret",
            "timestamp": (now - timedelta(hours=2)).isoformat(),
            "tenant": "other-org",
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 1_000,
            "output_tokens": 10,
            "prompt_hash": "other-secret",
            "tags": {"feature": "hidden-feature"},
        }
    ]
    result = usage_records_ingest(items=[json.dumps(item).encode() for item in items], scope_tenant_ids=None)
    assert result.accepted == len(items), result.errors


@pytest.mark.parametrize("url", ["/savings/", "/savings/csv", "/savings/pdf"])
def test_the_savings_pages_need_a_signed_in_user(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_staff_see_the_ranked_opportunities_of_the_report(staff_client, repeated, staff_user):
    page = staff_client.get("/savings/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'aria-current="page">Savings</a>' in html
    report = page.context["report"]
    titles = [entry["title"] for entry in report["opportunities"]]
    assert (
        "Cache repeated prompts of chat on gpt-4o" in titles
        and "Move chat from gpt-4o to gpt-4o-mini" in titles
    )
    for title in titles:
        assert title in html
    # The same figures as the savings report for the same scope (the API's selector).
    scope = optimisation_scope_for(principal=staff_user, now=timezone.now())
    expected = savings_report(scope)
    assert [entry["period_savings_nanos"] for entry in report["opportunities"]] == [
        entry["period_savings_nanos"] for entry in expected["opportunities"]
    ]
    assert "faq-1" in html and "hidden-feature" in html  # staff see every tenant


def test_each_opportunity_states_its_evidence_in_words(staff_client, repeated):
    """Figures worked out by hand from the fixture: team-a's four chat calls on gpt-4o (30,000 input
    and 500 output tokens each, one prompt sent four times) and team-b's two on gpt-4o-mini."""
    page = staff_client.get("/savings/")
    facts = {entry["title"]: entry["evidence_facts"] for entry in page.context["report"]["opportunities"]}
    # gpt-4o: $2.50 / $10 per million input / output tokens: 4 x (0.075 + 0.005) = $0.32.
    assert facts["Cache repeated prompts of chat on gpt-4o"] == [
        "3 of 4 requests answerable from a cache; distinct prompts repeated: 1",
        "list cost $0.3200",  # under a dollar, the pages show four decimals
    ]
    # gpt-4o-mini: $0.15 / $0.60 per million: 4 x (0.0045 + 0.0003) = $0.0192. No latencies sent.
    assert facts["Move chat from gpt-4o to gpt-4o-mini"] == [
        "4 requests: $0.3200 on gpt-4o, $0.0192 at gpt-4o-mini's prices",
        "errors 0.0% and p95 latency \N{EN DASH} on gpt-4o; 0.0% and \N{EN DASH} on gpt-4o-mini (2 requests)",
    ]
    html = page.content.decode()
    assert "distinct prompts repeated: 1" in html and "{&#x27;" not in html  # no raw dictionaries


def test_a_member_sees_only_their_tenants(team_a_client, repeated):
    page = team_a_client.get("/savings/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "faq-1" in html and "other-secret" not in html and "hidden-feature" not in html
    # team-b's cheaper model is outside team-a's view: no substitution to suggest from it.
    assert "Move chat from gpt-4o to gpt-4o-mini" not in html
    other = team_a_client.get("/savings/?tenant=other-org")
    assert other.status_code == 200 and "faq-1" not in other.content.decode()
    assert other.context["report"]["opportunities"] == []


def test_csv_and_pdf_downloads(staff_client, repeated):
    csv_text = staff_client.get("/savings/csv").content.decode()
    assert csv_text.splitlines()[0].startswith("rank,kind,title")
    assert "Cache repeated prompts of chat on gpt-4o" in csv_text
    pdf = staff_client.get("/savings/pdf")
    assert pdf["Content-Type"] == "application/pdf"
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "Cache repeated prompts of chat on gpt-4o" in text


def test_a_bad_range_is_a_400_page_with_the_reason(staff_client):
    page = staff_client.get("/savings/?start=2026-05-01&end=2026-04-01")
    assert page.status_code == 400 and b'role="alert"' in page.content


def test_prompt_caching_and_routing_evidence_read_as_sentences():
    prompt_caching = {
        "kind": "prompt_caching",
        "evidence": {
            "input_tokens": 1_122_319,
            "cached_input_tokens": 373_613,
            "extra_cached_tokens": 187_347,
            "input_price_per_mtok_usd": "3.000000000",
            "cache_read_price_per_mtok_usd": "0.300000000",
        },
    }
    assert formatting.opportunity_evidence(prompt_caching) == [
        "1,122,319 input tokens, 373,613 cached; 187,347 more cached",
        "input $3.00, cache read $0.3000 per million tokens",
    ]
    routing = {
        "kind": "routing_rollout",
        "evidence": {
            "policy_id": 7,
            "policy_requests": 1_200,
            "control_requests": 1_180,
            "cost_per_request_difference_usd": "-0.001250000",
            "significant": True,
            "error_rate_difference": 0.0025,
        },
    }
    assert formatting.opportunity_evidence(routing) == [
        "policy arm 1,200 requests, control 1,180",
        "policy minus control: -$0.00125 per request (significant at 95 %)",
        "policy minus control: error rate 0.25%",
    ]


def test_the_form_shows_the_range_the_figures_cover(staff_client, repeated):
    page = staff_client.get("/savings/")
    scope = page.context["scope"]
    html = page.content.decode()
    # The default range: the last 30 days up to the end of today, in the viewer's calendar (UTC here).
    assert f'name="start" value="{scope.start.date().isoformat()}"' in html
    assert f'name="end" value="{scope.end.date().isoformat()}"' in html
    assert (scope.end - scope.start).days == 30 and scope.end > timezone.now()
    chosen = staff_client.get("/savings/?start=2026-01-01&end=2026-01-08")
    assert 'name="start" value="2026-01-01"' in chosen.content.decode()
