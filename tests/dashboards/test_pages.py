"""The pages: sign-in, scope, figures equal to /api/v1/costs/, drill-down, budgets, statements, CSV."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chargeback import money
from chargeback.models import UsageRecord
from dashboards import selectors
from tests.dashboards.conftest import PASSWORD
from tests.factories import BudgetFactory, BudgetThresholdFactory, StatementFactory, StatementLineFactory
from tests.insights.test_services import make_anomaly

pytestmark = pytest.mark.django_db

PAGES = [
    "/",
    "/?stack=tenant",
    "/tenants/",
    "/tenants/acme/",
    "/tenants/acme/?tag.feature=chat",
    "/tenants/acme/?tag.feature=chat&model=gpt-4o",
    "/tenants/acme/?tag.feature=chat&model=gpt-4o&tag.prompt_template=answer-v1",
    "/budgets/",
    "/statements/",
]


def _range() -> str:
    """The last 20 UTC days through today, as query parameters (the usage spans the last 10)."""
    today = timezone.now().date()
    return f"start={today - timedelta(days=20)}&end={today + timedelta(days=1)}"


@pytest.mark.parametrize("url", [*PAGES, "/costs.csv", "/statements/1/pdf", "/statements/1/csv"])
def test_every_page_needs_a_signed_in_user(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_the_login_form_signs_in_and_out(client, staff_user):
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    response = client.post("/accounts/login/", {"username": "finops", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/").status_code == 302


def test_every_page_renders_for_staff(staff_client, usage):
    usage(150)
    for url in PAGES:
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert b"<svg" in response.content or url in ("/budgets/", "/statements/")


def test_overview_figures_equal_the_costs_api(staff_client, client_for, usage):
    usage(300)
    api = client_for()
    for parameters in (_range(), f"{_range()}&tenant=team-a&provider=openai", f"{_range()}&tag.feature=chat"):
        page = staff_client.get(f"/?{parameters}")
        answer = api.get(f"/api/v1/costs/?{parameters}").json()
        current = page.context["trends"].current
        for name in ("cost_usd", "requests", "errors", "total_tokens", "latency_p50_ms", "latency_p95_ms",
                     "unpriced_requests", "cost_per_1k_tokens_usd"):  # fmt: skip
            assert current[name] == answer["totals"][name], (parameters, name)
        assert current["requests"] > 0


def test_top_tables_equal_the_costs_api_grouped(staff_client, client_for, usage):
    usage(300)
    api = client_for()
    page = staff_client.get(f"/?{_range()}")
    tables = {table.dimension: table for table in page.context["breakdowns"]}
    for dimension in ("tenant", "tag.feature", "model"):
        answer = api.get(f"/api/v1/costs/?{_range()}&granularity=total&group_by={dimension}").json()
        expected = {row["group"][dimension]: row["cost_usd"] for row in answer["rows"]}
        shown = {row.label: money.nanos_to_str(row.cost_nanos) for row in tables[dimension].rows}
        assert shown == expected, dimension


def test_csv_download_is_the_costs_api_csv(staff_client, client_for, usage):
    usage(200)
    parameters = f"{_range()}&granularity=day&group_by=model,tag.feature&tenant=acme"
    page_csv = staff_client.get(f"/costs.csv?{parameters}")
    api_csv = client_for().get(f"/api/v1/costs/?{parameters}&format=csv")
    assert page_csv.status_code == 200 and page_csv["Content-Type"].startswith("text/csv")
    assert page_csv.content == api_csv.content
    assert page_csv.content.count(b"\n") > 5
    bad = staff_client.get("/costs.csv?granularity=fortnight")
    assert bad.status_code == 400 and b"granularity" in bad.content


def test_every_page_links_a_csv_of_what_it_shows(staff_client, usage):
    usage(100)
    response = staff_client.get(f"/?{_range()}&tenant=team-a&stack=tenant")
    links = re.findall(r'href="(/costs\.csv\?[^"]+)"', response.content.decode())
    assert any("group_by=tenant" in link and "tenant=team-a" in link for link in links)
    for link in links:
        assert staff_client.get(link.replace("&amp;", "&")).status_code == 200


def test_a_tenant_user_sees_only_their_tenant_and_below(team_a_client, client_for, organisation, usage):
    usage(300)
    page = team_a_client.get(f"/?{_range()}")
    answer = client_for(tenant=organisation["team-a"]).get(f"/api/v1/costs/?{_range()}").json()
    assert page.context["trends"].current["cost_usd"] == answer["totals"]["cost_usd"]
    assert [node.slug for node in page.context["choices"].tenants] == ["project-a1", "team-a"]
    assert team_a_client.get("/tenants/team-a/").status_code == 200
    assert team_a_client.get("/tenants/project-a1/").status_code == 200
    for outside in ("acme", "team-b", "other-org", "no-such-tenant"):
        response = team_a_client.get(f"/tenants/{outside}/")
        assert response.status_code == 404, outside
        assert b"Not found" in response.content
    # A filter on a tenant outside the scope answers "no usage", as the API does.
    assert team_a_client.get("/?tenant=team-b").context["trends"].current["requests"] == 0
    assert team_a_client.get("/costs.csv?tenant=other-org&group_by=tenant").content.count(b"\n") == 1
    index = team_a_client.get(f"/tenants/?{_range()}")
    assert [row.label for row in index.context["breakdowns"][0].rows] == ["Team A (team-a)"]


def test_a_user_without_memberships_sees_nothing(client, organisation, usage, django_user_model):
    usage(50)
    client.force_login(django_user_model.objects.create_user("nobody", password=PASSWORD))
    assert client.get("/").context["trends"].current["requests"] == 0
    assert client.get("/tenants/acme/").status_code == 404
    assert client.get("/tenants/").context["breakdowns"][0].rows == []


def test_drill_down_walks_tenant_feature_model_template_records(staff_client, usage):
    usage(400)
    tenant_page = staff_client.get(f"/tenants/acme/?{_range()}")
    tables = {table.dimension: table for table in tenant_page.context["breakdowns"]}
    assert set(tables) == {"tenant", "tag.feature"}
    total = tenant_page.context["trends"].current["cost_nanos"]
    # Child subtrees and acme's own usage add up to the tenant's total.
    assert sum(row.cost_nanos for row in tables["tenant"].rows) == total
    assert {row.label for row in tables["tenant"].rows} == {
        "Acme (own usage)",
        "Team A (team-a)",
        "Team B (team-b)",
    }

    feature_link = next(row.link for row in tables["tag.feature"].rows if "chat" in row.link)
    feature_page = staff_client.get(feature_link)
    assert feature_page.context["heading"] == "Acme · Feature: chat"
    assert [table.dimension for table in feature_page.context["breakdowns"]] == ["model"]
    feature_total = feature_page.context["trends"].current["cost_nanos"]
    assert 0 < feature_total < total

    model_page = staff_client.get(feature_page.context["breakdowns"][0].rows[0].link)
    assert [table.dimension for table in model_page.context["breakdowns"]] == ["tag.prompt_template"]
    assert model_page.context["trends"].current["cost_nanos"] <= feature_total

    template_row = model_page.context["breakdowns"][0].rows[0]
    records_page = staff_client.get(template_row.link)
    records = records_page.context["records"]
    model = model_page.context["filters"].model
    expected = UsageRecord.objects.filter(
        tenant__slug__in=["acme", "team-a", "project-a1", "team-b"],
        model_id=model,
        tags__feature="chat",
        tags__prompt_template=records_page.context["filters"].tags["prompt_template"],
    ).count()
    assert records.paginator.count == expected == template_row.requests
    assert records_page.context["breakdowns"] == []
    assert [step.label for step in records_page.context["steps"]][-1].startswith("Prompt template: ")


def test_record_pages_are_paginated(staff_client, usage, monkeypatch):
    usage(400)
    monkeypatch.setattr(selectors, "RECORDS_PER_PAGE", 3)
    url = "/tenants/acme/?tag.feature=chat&model=gpt-4o&tag.prompt_template=answer-v1"
    first = staff_client.get(url)
    records = first.context["records"]
    assert records.paginator.num_pages >= 2 and len(records) == 3
    assert "page=2" in first.context["records_query"]["next"]
    second = staff_client.get(f"{url}&page=2").context["records"]
    assert {record.pk for record in records}.isdisjoint({record.pk for record in second})
    newest_first = [record.occurred_at for record in [*records, *second]]
    assert newest_first == sorted(newest_first, reverse=True)


def test_the_number_of_queries_does_not_grow_with_the_records(staff_client, usage, organisation):
    BudgetThresholdFactory(budget=BudgetFactory(tenant=organisation["acme"]), percent=80)
    StatementLineFactory(statement=StatementFactory(tenant=organisation["team-a"], total_cents=250))
    usage(60)

    def query_counts():
        counts = {}
        for url in PAGES:
            with CaptureQueriesContext(connection) as queries:
                assert staff_client.get(url).status_code == 200
            counts[url] = len(queries)
        return counts

    few = query_counts()
    usage(600, seed=8, prefix="more")
    assert query_counts() == few
    assert max(few.values()) < 40


def test_budgets_page_shows_progress_bars_in_scope(staff_client, team_a_client, organisation, usage):
    usage(200)
    budget = BudgetFactory(tenant=organisation["team-a"], name="Team A monthly", amount_nanos=10**9)
    for percent in (50, 90):
        BudgetThresholdFactory(budget=budget, percent=percent)
    BudgetFactory(tenant=organisation["team-b"], name="Team B monthly")
    page = team_a_client.get("/budgets/")
    html = page.content.decode()
    assert [view.name for view in page.context["budgets"]] == ["Team A monthly"]
    assert 'role="progressbar"' in html and 'aria-valuemin="0"' in html
    status = page.context["budgets"][0]
    assert f'aria-valuenow="{status.percent_used:.2f}"' in html
    assert "Team B monthly" not in html
    assert "Threshold 50%" in html or "50%" in html
    assert {view.name for view in staff_client.get("/budgets/").context["budgets"]} == {
        "Team A monthly",
        "Team B monthly",
    }
    overview = staff_client.get("/")
    assert "Team A monthly" in overview.content.decode()


def test_statements_page_and_documents_are_scoped(client, team_a_client, organisation, django_user_model):
    mine = StatementFactory(tenant=organisation["team-a"], total_cents=250)
    StatementLineFactory(statement=mine)
    theirs = StatementFactory(tenant=organisation["team-b"], total_cents=250)
    StatementLineFactory(statement=theirs)
    page = team_a_client.get("/statements/")
    assert [statement.pk for statement in page.context["statements"]] == [mine.pk]
    assert f"/statements/{mine.pk}/pdf" in page.content.decode()
    pdf = team_a_client.get(f"/statements/{mine.pk}/pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    assert team_a_client.get(f"/statements/{mine.pk}/csv").status_code == 200
    for url in (f"/statements/{theirs.pk}/pdf", f"/statements/{theirs.pk}/csv", "/statements/999999/pdf"):
        assert team_a_client.get(url).status_code == 404, url


def test_bad_filters_are_reported_not_a_server_error(staff_client, usage):
    usage(20)
    response = staff_client.get("/?start=2026-03-10&end=2026-03-01")
    assert response.status_code == 400
    assert "end must be after start" in response.content.decode()
    # Nonsense the filter bar cannot produce is ignored.
    assert staff_client.get("/?granularity=fortnight&status=maybe&page=x&tag.=1").status_code == 200


def test_charts_carry_titles_descriptions_axes_and_legends(staff_client, usage):
    usage(100)
    html = staff_client.get("/").content.decode()
    for chart_id in ("cost-over-time", "requests-over-time", "cost-per-1k-tokens", "latency", "cached-share"):
        assert f'data-chart="{chart_id}"' in html
        assert f'<title id="{chart_id}-title">' in html and f'<desc id="{chart_id}-desc">' in html
    assert "Cost (USD)" in html and "Latency (ms)" in html
    assert 'class="legend"' in html and "Data table" in html
    assert "<script" not in html  # server-rendered SVG, no JavaScript at all


def test_the_overview_lists_the_anomalies_a_user_may_see(team_a_client, staff_client, organisation):
    now = timezone.now()
    started = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    make_anomaly(organisation["team-a"], started_at=started, ended_at=started + timedelta(hours=1))
    make_anomaly(organisation["team-b"], started_at=started, ended_at=started + timedelta(hours=1))

    html = team_a_client.get("/").content.decode()
    assert "Cost anomaly on team-a (total): +$40.00 (+400.00%)" in html
    assert "Top cause: feature search, $40.00 of the impact" in html
    assert "team-b" not in html  # another team's anomaly is not shown

    staff_html = staff_client.get("/").content.decode()
    assert "Cost anomaly on team-a (total)" in staff_html and "Cost anomaly on team-b (total)" in staff_html
    # Outside the page's date range it is not listed.
    earlier = staff_client.get("/?start=2020-01-01&end=2020-02-01").content.decode()
    assert "Cost anomaly on" not in earlier and "No anomalies detected in this range." in earlier
