"""The pages: thin views over dashboards.selectors. Every page needs a signed-in user and shows only
the tenants that user may see (tenants.scoping); a tenant or statement outside them is a 404."""

from __future__ import annotations

import json
from datetime import time, timedelta
from zoneinfo import ZoneInfo

from django.apps import apps
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET
from rest_framework.exceptions import ValidationError

from chargeback.calendar import local_date
from chargeback.costs import GRANULARITIES, CostQueryError, cost_result_as_dict
from chargeback.costs_api import CostsCsvRenderer, costs_for_parameters
from chargeback.models import Statement
from dashboards import formatting, selectors
from dashboards.filters import STACK_DIMENSIONS, PageFilters, page_filters_from

GRANULARITY_CHOICES = [
    ("", "Automatic"),
    *((name, name.capitalize()) for name in GRANULARITIES if name != "total"),
]
STACK_CHOICES = [(name, selectors.dimension_title(name)) for name in STACK_DIMENSIONS]


class LoginView(auth_views.LoginView):
    template_name = "pages/login.html"
    redirect_authenticated_user = True
    next_page = "dashboards:overview"


class LogoutView(auth_views.LogoutView):
    next_page = "dashboards:login"


def _page_context(request, filters: PageFilters, query, tenants, *, now, show_tenant_filter: bool) -> dict:
    """What the shared layout and the filter bar need."""
    # On a tenant's page the path names the tenant, so its links leave it out of the query string.
    link_filters = filters if show_tenant_filter else filters.with_changes(tenant="")
    today = local_date(now, query.time_zone)
    presets = [
        (
            f"Last {days} days",
            request.path
            + link_filters.with_changes(
                start=(today - timedelta(days=days - 1)).isoformat(),
                end=(today + timedelta(days=1)).isoformat(),
                granularity="",
                page=1,
            ).query_string(),
        )
        for days in (7, 30, 90)
    ]
    return {
        "presets": presets,
        "first_day": local_date(query.start, query.time_zone),
        "last_day": local_date(query.end - timedelta(microseconds=1), query.time_zone),
        "filters": filters,
        "query": query,
        "choices": selectors.filter_choices(query, tenants),
        "granularity_choices": GRANULARITY_CHOICES,
        "stack_choices": STACK_CHOICES,
        "show_tenant_filter": show_tenant_filter,
        "extra_tags": sorted(filters.extra_tags.items()),
        "remove_tag_links": [
            (
                key,
                value or selectors.UNTAGGED_LABEL,
                request.path + link_filters.with_tag(key, None).query_string(),
            )
            for key, value in sorted(filters.extra_tags.items())
        ],
        "feature_value": filters.tags.get("feature"),
        "feature_untagged": filters.tags.get("feature") == "",
        "remove_untagged_feature_link": request.path + link_filters.with_tag("feature", None).query_string(),
        "reset_link": request.path,
        "navigation_query": filters.with_changes(
            page=1, tenant="", tags={}, model="", provider=""
        ).query_string(),
    }


def _chart_csv_links(filters: PageFilters, query) -> dict:
    """CSV of what the charts show: cost by the stacked dimension, and totals, per bucket."""
    csv_url = reverse("dashboards:costs-csv")
    return {
        "stacked_csv_link": f"{csv_url}?{filters.api_parameters(granularity=query.granularity, group_by=(filters.stack,))}",
        "totals_csv_link": f"{csv_url}?{filters.api_parameters(granularity=query.granularity, group_by=())}",
    }


def _error_page(request, template: str, filters: PageFilters, error: CostQueryError, **extra):
    """The page with its filter bar and the reason, for a range or zone the costs query refuses."""
    context = {
        "filters": filters,
        "query": None,
        "error": error.message,
        "granularity_choices": GRANULARITY_CHOICES,
        "stack_choices": STACK_CHOICES,
        "reset_link": request.path,
        "navigation_query": "",
        **extra,
    }
    return render(request, template, context, status=400)


@login_required
@require_GET
def overview(request):
    filters = page_filters_from(request.GET)
    now = timezone.now()
    try:
        query = selectors.page_cost_query(principal=request.user, filters=filters, now=now)
        trends = selectors.cost_trends(query, stack=filters.stack)
        tenants = selectors.visible_tenants(principal=request.user)
        tables = selectors.top_breakdowns(query, filters=filters, path=request.path)
    except CostQueryError as error:
        return _error_page(request, "pages/overview.html", filters, error)
    context = _page_context(request, filters, query, tenants, now=now, show_tenant_filter=True)
    context.update(
        {
            "page_title": "Overview",
            "trends": trends,
            "breakdowns": tables,
            "budgets": selectors.budget_views(principal=request.user, now=now, tenant_ids=query.tenant_ids),
            "anomalies": selectors.anomaly_summaries(
                principal=request.user, start=query.start, end=query.end
            ),
            **_chart_csv_links(filters, query),
        }
    )
    return render(request, "pages/overview.html", context)


@login_required
@require_GET
def tenant_drill_down(request, slug: str | None = None):
    """A tenant and what is below it: child tenants and features, then models, prompt templates
    and finally the records themselves. Without a slug: the visible top-level tenants."""
    tenant = None
    if slug is not None:
        tenant = selectors.tenant_visible_get(principal=request.user, slug=slug)
        if tenant is None:
            raise Http404("No such tenant.")
    filters = page_filters_from(request.GET, tenant=tenant.slug if tenant else "")
    if tenant is None:
        # The index lists tenants; the feature/model steps belong to one tenant's page.
        filters = filters.with_changes(tenant="")
    now = timezone.now()
    path = request.path
    try:
        query = selectors.page_cost_query(principal=request.user, filters=filters, now=now)
        trends = selectors.cost_trends(query, stack=filters.stack)
        tenants = selectors.visible_tenants(principal=request.user)
        next_dimension = selectors.drill_next_dimension(filters)
        tables = []
        if tenant is None or next_dimension == "tag.feature":
            tables.append(selectors.tenant_breakdown(query, root=tenant, tenants=tenants, filters=filters))
        if tenant is not None and next_dimension is not None:
            tables.append(selectors.drill_breakdown(query, next_dimension, path=path, filters=filters))
        records = (
            selectors.usage_record_page(query, page=filters.page)
            if tenant is not None and next_dimension is None
            else None
        )
    except CostQueryError as error:
        return _error_page(request, "pages/tenant.html", filters, error, tenant=tenant)
    steps = selectors.drill_steps(path, filters) if tenant else []
    heading = tenant.name if tenant else "Tenants"
    if steps:
        heading = f"{heading} · {' · '.join(step.label for step in steps)}"
    context = _page_context(request, filters, query, tenants, now=now, show_tenant_filter=tenant is None)
    context.update(
        {
            "page_title": heading,
            "heading": heading,
            "tenant": tenant,
            "breadcrumbs": selectors.tenant_breadcrumbs(tenant, tenants, filters) if tenant else [],
            "tenant_link": path + filters.without_drill_steps().query_string() if tenant else "",
            "steps": steps,
            "trends": trends,
            "breakdowns": tables,
            "records": records,
            "records_query": {
                "previous": filters.query_string(tenant="", page=records.previous_page_number())
                if records is not None and records.has_previous()
                else "",
                "next": filters.query_string(tenant="", page=records.next_page_number())
                if records is not None and records.has_next()
                else "",
            },
            **_chart_csv_links(filters, query),
        }
    )
    return render(request, "pages/tenant.html", context)


@login_required
@require_GET
def budgets_page(request):
    views = selectors.budget_views(principal=request.user, now=timezone.now())
    return render(
        request,
        "pages/budgets.html",
        {"page_title": "Budgets", "budgets": views, "navigation_query": ""},
    )


@login_required
@require_GET
def statements_page(request):
    status = request.GET.get("status", "")
    status = status if status in Statement.Status.values else ""
    try:
        page = int(request.GET.get("page", "1"))
    except ValueError:
        page = 1
    statements = selectors.statement_page(principal=request.user, page=page, status=status)
    return render(
        request,
        "pages/statements.html",
        {
            "page_title": "Statements",
            "statements": statements,
            "status": status,
            "status_choices": Statement.Status.choices,
            "navigation_query": "",
        },
    )


def _statement_filename(statement: Statement) -> str:
    return statement.number or f"draft-{statement.tenant.slug}-{statement.period_key}"


@login_required
@require_GET
def statement_pdf(request, pk: int):
    from chargeback.statement_documents import statement_pdf_render

    statement = selectors.statement_visible_get(principal=request.user, statement_id=pk)
    if statement is None:
        raise Http404("No such statement.")
    pdf = bytes(statement.pdf) if statement.pdf else statement_pdf_render(statement)
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="{_statement_filename(statement)}.pdf"'
    return response


@login_required
@require_GET
def statement_csv(request, pk: int):
    from chargeback.statement_documents import statement_csv as statement_csv_text

    statement = selectors.statement_visible_get(principal=request.user, statement_id=pk)
    if statement is None:
        raise Http404("No such statement.")
    response = HttpResponse(statement_csv_text(statement), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_statement_filename(statement)}.csv"'
    return response


@login_required
@require_GET
def costs_csv(request):
    """`/api/v1/costs/` as CSV for a signed-in person: the API's parameters, query and renderer."""
    try:
        result = costs_for_parameters(request.GET, principal=request.user)
    except ValidationError as error:
        return _csv_error("validation_error", json.dumps(error.detail))
    except CostQueryError as error:
        return _csv_error(error.code, error.message)
    response = HttpResponse(
        CostsCsvRenderer().render(cost_result_as_dict(result)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = 'attachment; filename="costs.csv"'
    return response


def _csv_error(code: str, message: str) -> HttpResponse:
    return HttpResponseBadRequest(f"{code}: {message}\n", content_type="text/plain; charset=utf-8")


# --- savings (the insights app's cost optimisation reports) -------------------------------------------


def _savings_for(request):
    """The savings page's scope and reports for the signed-in person: (context, error). The insights
    app sits above this one and may be absent (then the page does not exist)."""
    if not apps.is_installed("insights"):
        raise Http404("Cost optimisation needs the insights app.")
    from budgets.routing_selectors import routing_policy_list
    from insights import optimisation_selectors as optimisation

    parameters = {name: request.GET.get(name, "").strip() for name in ("start", "end", "tenant")}
    feature = request.GET.get("feature")
    try:
        scope = optimisation.optimisation_scope_for(
            principal=request.user, now=timezone.now(), feature=feature or None, **parameters
        )
        caching = optimisation.caching_report(scope)
        report = optimisation.savings_report(scope, caching=caching)
        costliest = optimisation.costliest_request_types(scope, limit=15)
    except CostQueryError as error:
        return {"parameters": parameters, "feature": feature or ""}, error.message
    visible_policies = routing_policy_list(principal=request.user).filter(is_active=True)
    if scope.tenant_ids is not None:
        visible_policies = visible_policies.filter(tenant_id__in=scope.tenant_ids)
    policies = [
        optimisation.routing_policy_report(policy, visible_tenant_ids=scope.tenant_ids, now=scope.now)
        for policy in visible_policies[:10]
    ]
    for item in policies:
        for arm in (item["ab_test"]["policy"], item["ab_test"]["control"]):
            arm["error_percent"] = None if arm["error_rate"] is None else arm["error_rate"] * 100
    from insights.optimisation_documents import KIND_LABELS

    top = max((entry["monthly_savings_nanos"] for entry in report["opportunities"]), default=0)
    for entry in report["opportunities"]:
        entry["bar_width"] = 120 * entry["monthly_savings_nanos"] / top if top else 0
        entry["evidence_facts"] = formatting.opportunity_evidence(entry)
    for name, moment in (("start", scope.start), ("end", scope.end)):
        local = moment.astimezone(ZoneInfo(scope.time_zone))
        if not parameters[name] and local.time() == time(0):  # show the default range in the form
            parameters[name] = local.date().isoformat()
    return {
        "parameters": parameters,
        "feature": feature or "",
        "scope": scope,
        "report": report,
        "monthly_total_by_kind": [
            (KIND_LABELS.get(kind, kind), nanos)
            for kind, nanos in report["monthly_savings_nanos_by_kind"].items()
        ],
        "costliest": costliest,
        "exact_cache": caching["exact_cache"],
        "prompt_caching": caching["prompt_caching"][:15],
        "policies": policies,
        "query_string": request.GET.urlencode(),
    }, None


@login_required
@require_GET
def savings_page(request):
    """Opportunities ranked by monthly savings, the costliest request types, caching and routing
    policies' A/B evidence: the weekly cost review's page."""
    context, error = _savings_for(request)
    context.update(
        {
            "page_title": "Savings",
            "error": error,
            "tenants": selectors.visible_tenants(principal=request.user).values(),
            "navigation_query": "",
        }
    )
    return render(request, "pages/savings.html", context, status=400 if error else 200)


@login_required
@require_GET
def savings_csv(request):
    from insights.optimisation_documents import savings_report_csv

    context, error = _savings_for(request)
    if error:
        return _csv_error("invalid_query", error)
    response = HttpResponse(savings_report_csv(context["report"]), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="savings.csv"'
    return response


@login_required
@require_GET
def savings_pdf(request):
    from insights.optimisation_documents import savings_report_pdf

    context, error = _savings_for(request)
    if error:
        return _csv_error("invalid_query", error)
    response = HttpResponse(savings_report_pdf(context["report"]), content_type="application/pdf")
    response["Content-Disposition"] = 'inline; filename="savings.pdf"'
    return response
