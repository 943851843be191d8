"""The Savings page: sign-in, the ranked opportunities (the savings report's figures), scope per
person, CSV and PDF downloads."""

import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from pypdf import PdfReader

from chargeback.services import usage_records_ingest
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
