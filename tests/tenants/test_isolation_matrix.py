"""Tenant isolation, for every URL of the project: tenant A's key (the API) and tenant A's signed-in
user (the pages) can neither read nor change anything of tenant B, and anonymous requests get
nothing at all.

The URLs are not listed by hand: the test walks the URL configuration, so a new endpoint is covered
as soon as it exists, and fails until ENDPOINTS (or PUBLIC, with the reason) says how to reach it
with tenant B's objects. Django's admin is asserted to require staff instead.

For each URL, every method (GET, POST, PUT, PATCH, DELETE):
- with B's objects in the path: 403, 404 or 405, for A's key and A's user;
- without (lists, exports, queries, ingestion): no server error, and no answer that shows B (its
  slug, its name or its objects' names, which all carry B's slug), also when asked with
  `?tenant=<B>`; writes name B's tenant in the body;
- anonymous: 401 or 403 (API), a redirect to the sign-in page (pages);
- afterwards, every row that belongs to B is as it was and none was added.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import models
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import Tenant, TenantMembership
from tests.factories import ApiKeyFactory, TenantFactory
from tests.objects import TenantObjects, tenant_objects_create, usage_create

METHODS = ("get", "post", "put", "patch", "delete")
B_SLUG, B_NAME = "iso-bravo", "Bravo Holdings"
A_SLUG = "iso-alpha"


@dataclass(frozen=True)
class Endpoint:
    """How to reach a URL with tenant B's objects.

    `objects`: for a URL with path parameters, the kwargs naming B's objects (one dict per object
    to try); None for a URL without. `query`: parameters for GET, so that the answer has data.
    `body`: for writes, a plausible body; `tenant_field`: whether the body names a tenant in a
    top-level `tenant` (B's for a list, A's for B's object: an attempt to move it), else the body
    names B itself where it can."""

    objects: Callable[[TenantObjects], list[dict]] | None = None
    query: dict = field(default_factory=dict)
    body: dict = field(default_factory=dict)
    tenant_field: bool = True


def _pk(*attributes: str) -> Callable[[TenantObjects], list[dict]]:
    return lambda owned: [{"pk": getattr(owned, attribute).pk} for attribute in attributes]


_STATEMENTS = _pk("statement", "finalized_statement")
_RECENT = {"start": "2026-01-01", "end": "2026-12-31"}
_RECORD = {
    "event_id": "isolation-1",
    "timestamp": "2026-03-10T12:00:00Z",
    "provider": "openai",
    "model": "gpt-4o",
    "input_tokens": 10,
    "output_tokens": 5,
}

# Every named URL of the project (admin aside): add yours here, or to PUBLIC with the reason.
ENDPOINTS: dict[str, Endpoint] = {
    # tenants
    "tenant-list": Endpoint(),
    "tenant-detail": Endpoint(objects=lambda owned: [{"slug": owned.tenant.slug}]),
    "whoami": Endpoint(),
    # usage, costs, integrations, OTLP
    "usage": Endpoint(body={"records": [{**_RECORD, "tenant": B_SLUG}]}, tenant_field=False),
    "costs": Endpoint(query={**_RECENT, "group_by": "tenant"}),
    "integration-litellm": Endpoint(
        body={"model": "gpt-4o", "metadata": {"tenant": B_SLUG}}, tenant_field=False
    ),
    "otlp-traces": Endpoint(body={"resourceSpans": []}, tenant_field=False),
    # statements
    "statement-list": Endpoint(),
    "statement-detail": Endpoint(objects=_STATEMENTS),
    "statement-pdf": Endpoint(objects=_STATEMENTS),
    "statement-csv": Endpoint(objects=_STATEMENTS),
    "statement-finalize": Endpoint(objects=_STATEMENTS),
    "statement-void": Endpoint(objects=_STATEMENTS, body={"reason": "hijacked"}),
    "export-focus": Endpoint(query={"period": "2026-03"}),
    # budgets, allowance, channels, routing
    "budget-list": Endpoint(body={"name": "hijacked", "amount_usd": "5", "period": "month"}),
    "budget-detail": Endpoint(objects=_pk("budget"), body={"name": "hijacked", "amount_usd": "5"}),
    "budget-status": Endpoint(objects=_pk("budget")),
    "allowance": Endpoint(body={"estimated_cost_usd": "1"}),
    "notification-channel-list": Endpoint(
        body={"name": "hijacked", "kind": "webhook", "target": "https://example.com/hook"}
    ),
    "notification-channel-detail": Endpoint(objects=_pk("channel"), body={"name": "hijacked"}),
    "routing-policy-list": Endpoint(body={"name": "hijacked", "rules": [{"target_model": "gpt-4o-mini"}]}),
    "routing-policy-detail": Endpoint(objects=_pk("routing_policy"), body={"name": "hijacked"}),
    "routing-policy-report": Endpoint(objects=_pk("routing_policy")),
    # insights
    "anomaly-list": Endpoint(),
    "anomaly-detail": Endpoint(objects=_pk("anomaly", "resolved_anomaly")),
    "anomaly-acknowledge": Endpoint(objects=_pk("anomaly")),
    "anomaly-resolve": Endpoint(objects=_pk("anomaly")),
    "anomaly-feedback": Endpoint(objects=_pk("anomaly"), body={"feedback": "planned", "note": "hijacked"}),
    "anomaly-subscription-list": Endpoint(body={"name": "hijacked"}),
    "anomaly-subscription-detail": Endpoint(objects=_pk("subscription"), body={"name": "hijacked"}),
    "alert-rule-list": Endpoint(
        body={"name": "hijacked", "metric": "cost", "window": "day", "threshold": "1"}
    ),
    "alert-rule-detail": Endpoint(objects=_pk("alert_rule"), body={"name": "hijacked"}),
    "alert-rule-event-list": Endpoint(),
    "forecast-list": Endpoint(),
    "forecast-detail": Endpoint(objects=_pk("forecast")),
    "optimisation-costliest": Endpoint(query=_RECENT),
    "optimisation-caching": Endpoint(query=_RECENT),
    "optimisation-what-if": Endpoint(query={**_RECENT, "model": "gpt-4o-mini"}),
    "optimisation-savings": Endpoint(query=_RECENT),
    "optimisation-savings-csv": Endpoint(query=_RECENT),
    "optimisation-savings-pdf": Endpoint(query=_RECENT),
    # audit
    "audit-event-list": Endpoint(),
    # pages
    "dashboards:overview": Endpoint(query=_RECENT),
    "dashboards:tenants": Endpoint(query=_RECENT),
    "dashboards:tenant": Endpoint(objects=lambda owned: [{"slug": owned.tenant.slug}]),
    "dashboards:budgets": Endpoint(),
    "dashboards:statements": Endpoint(),
    "dashboards:statement-pdf": Endpoint(objects=_STATEMENTS),
    "dashboards:statement-csv": Endpoint(objects=_STATEMENTS),
    "dashboards:costs-csv": Endpoint(query={**_RECENT, "group_by": "tenant"}),
    "dashboards:savings": Endpoint(query=_RECENT),
    "dashboards:savings-csv": Endpoint(query=_RECENT),
    "dashboards:savings-pdf": Endpoint(query=_RECENT),
}

# Reachable without a key or a user, on purpose; none serves a tenant's data to anyone who asks.
PUBLIC = {
    "healthz": "liveness for load balancers: database and broker status, no tenant data",
    "metrics": "Prometheus scrape for the operator (every tenant by design), protected by METRICS_TOKEN "
    "(test_metrics_needs_its_token_when_one_is_set)",
    "schema": "the OpenAPI document",
    "api-docs": "Swagger UI over the OpenAPI document",
    "api-redoc": "ReDoc over the OpenAPI document",
    "dashboards:login": "the sign-in page",
    "dashboards:logout": "signing out (POST); it reveals nothing",
}


@dataclass(frozen=True)
class Route:
    name: str
    route: str
    kwargs: tuple[str, ...]

    @property
    def is_api(self) -> bool:
        return self.route.startswith(("api/", "v1/"))


def _routes(patterns, prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":
                continue  # test_the_admin_requires_staff
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}{pattern.name}" if pattern.name else ""
            yield Route(name, prefix + str(pattern.pattern), tuple(pattern.pattern.converters))


ROUTES = list(_routes(get_resolver().url_patterns))
COVERED = [route for route in ROUTES if route.name in ENDPOINTS]


def test_every_url_is_in_the_isolation_matrix():
    unnamed = [route.route for route in ROUTES if not route.name]
    assert not unnamed, f"URLs without a name cannot be checked for tenant isolation; name them: {unnamed}"
    missing = sorted({route.name for route in ROUTES} - set(ENDPOINTS) - set(PUBLIC))
    assert not missing, (
        f"URLs not in the tenant isolation matrix: {missing}. Add each to ENDPOINTS in {__name__} "
        "(with how to name tenant B's objects in its path, if it has parameters, and a body for "
        "writes), or to PUBLIC with the reason it may answer anyone."
    )
    stale = sorted((set(ENDPOINTS) | set(PUBLIC)) - {route.name for route in ROUTES})
    assert not stale, f"ENDPOINTS or PUBLIC name URLs that no longer exist: {stale}"
    for route in ROUTES:
        if route.name in ENDPOINTS:
            assert bool(route.kwargs) == (ENDPOINTS[route.name].objects is not None), (
                f"{route.name}: path parameters {route.kwargs}, so ENDPOINTS needs `objects` exactly then"
            )


# --- tenant B's world and its fingerprint ----------------------------------------------------------


@pytest.fixture
def stub_pdf(monkeypatch):
    """Finalizing renders a PDF; isolation does not need a real one (and it is the slow part)."""
    monkeypatch.setattr(
        "chargeback.statement_documents.statement_pdf_render",
        lambda statement, *args, **kwargs: b"%PDF-1.4\n",
    )


@pytest.fixture
def bravo(db, stub_pdf) -> TenantObjects:
    """Tenant B (an organisation with a team) and one of each of its objects, with recent usage."""
    tenant = TenantFactory(slug=B_SLUG, name=B_NAME, kind="organization")
    TenantFactory(slug=f"{B_SLUG}-team", name=f"{B_NAME} Team", parent=tenant)
    owned = tenant_objects_create(tenant)
    usage_create(tenant, at=timezone.now() - timezone.timedelta(hours=2), cost_usd="3.25")
    ApiKeyFactory.create_with_secret(tenant=tenant, scopes=["admin"])
    return owned


@pytest.fixture
def alpha(db, stub_pdf) -> TenantObjects:
    """Tenant A (an organisation with a team), with objects of its own so that lists are not empty."""
    tenant = TenantFactory(slug=A_SLUG, name="Alpha Group", kind="organization")
    team = TenantFactory(slug=f"{A_SLUG}-team", name="Alpha Team", parent=tenant)
    owned = tenant_objects_create(team)
    usage_create(team, at=timezone.now() - timezone.timedelta(hours=2), cost_usd="1.50")
    owned.tenant = tenant
    return owned


def _owned_querysets(tenant: Tenant) -> Iterator[tuple[str, models.QuerySet]]:
    """Every row that belongs to `tenant`: rows with a foreign key to it, and rows of their children."""
    tenant_models = {}
    for model in apps.get_models():
        for model_field in model._meta.get_fields():
            if isinstance(model_field, models.ForeignKey) and model_field.related_model is Tenant:
                tenant_models.setdefault(model, []).append(model_field.name)
    yield "tenants.Tenant", Tenant.objects.filter(pk=tenant.pk)
    for model in apps.get_models():
        for model_field in model._meta.get_fields():
            if not isinstance(model_field, models.ForeignKey):
                continue
            if model_field.related_model is Tenant:
                yield (
                    f"{model._meta.label}.{model_field.name}",
                    model._base_manager.filter(**{model_field.name: tenant}),
                )
            for parent_field in tenant_models.get(model_field.related_model, []):
                yield (
                    f"{model._meta.label}.{model_field.name}.{parent_field}",
                    model._base_manager.filter(**{f"{model_field.name}__{parent_field}": tenant}),
                )


def _fingerprint(tenant: Tenant) -> dict:
    return {
        label: sorted(map(repr, queryset.order_by("pk").values()))
        for label, queryset in _owned_querysets(tenant)
    }


def _changes(before: dict, after: dict) -> list[str]:
    return [label for label in before if before[label] != after[label]]


# What only B's data contains: its name, its team's slug, its objects' names ("budget of iso-bravo",
# "feature-of-iso-bravo", ...) and its usage's event ids. B's slug alone also counts, except in an
# answer to a request that names it (a page repeats its filters).
B_MARKERS = (B_NAME, f"{B_SLUG}-team", f"of {B_SLUG}", f"-of-{B_SLUG}", f"{B_SLUG}-20")


def _shows_b(response, *, asked_for_b: bool) -> bool:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    text = content.decode("utf-8", "replace")
    return any(marker in text for marker in B_MARKERS) or (not asked_for_b and B_SLUG in text)


def _call(client, method: str, url: str, body: dict, query: dict):
    if method == "get":
        return client.get(url, query)
    return getattr(client, method)(url, body, content_type="application/json")


def _check_routes(client, routes: list[Route], bravo: TenantObjects, alpha: TenantObjects) -> list[str]:
    """Every method of every route as `client` (A's key or A's user); the list of violations."""
    failures = []
    for route in routes:
        endpoint = ENDPOINTS[route.name]
        if endpoint.objects is not None:
            for kwargs in endpoint.objects(bravo):
                url = reverse(route.name, kwargs=kwargs)
                body = {**endpoint.body, **({"tenant": alpha.tenant.slug} if endpoint.tenant_field else {})}
                for method in METHODS:
                    response = _call(client, method, url, body, {})
                    if response.status_code not in (403, 404, 405):
                        failures.append(
                            f"{method.upper()} {url} (B's object) answered {response.status_code}"
                        )
            continue
        url = reverse(route.name)
        for method in METHODS:
            body = {**endpoint.body, **({"tenant": B_SLUG} if endpoint.tenant_field else {})}
            for query in [endpoint.query, {**endpoint.query, "tenant": B_SLUG}] if method == "get" else [{}]:
                response = _call(client, method, url, body, query)
                if response.status_code >= 500:
                    failures.append(f"{method.upper()} {url} {query or ''} answered {response.status_code}")
                elif (
                    method == "get"
                    and response.status_code < 300
                    and _shows_b(response, asked_for_b="tenant" in query)
                ):
                    failures.append(f"GET {url} {query or ''} shows tenant B ({B_SLUG} / {B_NAME})")
    return failures


def test_tenant_a_key_cannot_reach_tenant_b(alpha, bravo):
    _, secret = ApiKeyFactory.create_with_secret(tenant=alpha.tenant, scopes=["ingest", "read", "admin"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    before = _fingerprint(bravo.tenant)
    failures = _check_routes(client, [route for route in COVERED if route.is_api], bravo, alpha)
    failures += [
        f"tenant B's rows changed: {label}" for label in _changes(before, _fingerprint(bravo.tenant))
    ]
    assert not failures, "A's key reaches tenant B:\n" + "\n".join(failures)


def test_tenant_a_user_cannot_reach_tenant_b_pages(alpha, bravo):
    user = get_user_model().objects.create_user("alpha-person", password="not-used-here")
    TenantMembership.objects.create(user=user, tenant=alpha.tenant)
    client = Client()
    client.force_login(user)
    before = _fingerprint(bravo.tenant)
    failures = _check_routes(client, [route for route in COVERED if not route.is_api], bravo, alpha)
    failures += [
        f"tenant B's rows changed: {label}" for label in _changes(before, _fingerprint(bravo.tenant))
    ]
    assert not failures, "A's user reaches tenant B:\n" + "\n".join(failures)


def test_anonymous_requests_get_nothing(bravo):
    client = Client()
    before = _fingerprint(bravo.tenant)
    login = reverse("dashboards:login")
    failures = []
    for route in COVERED:
        endpoint = ENDPOINTS[route.name]
        urls = [
            reverse(route.name, kwargs=kwargs) for kwargs in (endpoint.objects or (lambda _: [None]))(bravo)
        ]
        for url in urls:
            for method in METHODS:
                response = _call(client, method, url, {**endpoint.body, "tenant": B_SLUG}, endpoint.query)
                if route.is_api:
                    refused = response.status_code in (401, 403)
                else:
                    refused = response.status_code == 302 and response["Location"].startswith(login)
                    refused = refused or response.status_code == 405
                if not refused:
                    failures.append(f"anonymous {method.upper()} {url} answered {response.status_code}")
    failures += [
        f"tenant B's rows changed: {label}" for label in _changes(before, _fingerprint(bravo.tenant))
    ]
    assert not failures, "\n".join(failures)


def test_public_urls_answer_anonymous_requests(db):
    client = Client()
    for name in PUBLIC:
        response = client.get(reverse(name))
        assert response.status_code in (200, 405), (name, response.status_code)


def test_metrics_needs_its_token_when_one_is_set(db, settings):
    settings.METRICS_TOKEN = "metrics-secret"
    client = Client()
    assert client.get(reverse("metrics")).status_code == 401
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer metrics-secret").status_code == 200


def test_the_admin_requires_staff(alpha):
    """Django's admin (every registered model's list) is for staff users only: not for anonymous
    requests, not for a tenant's user, not for an API key (Django's admin reads no API key)."""
    user = get_user_model().objects.create_user("alpha-person", password="not-used-here")
    TenantMembership.objects.create(user=user, tenant=alpha.tenant)
    member = Client()
    member.force_login(user)
    _, secret = ApiKeyFactory.create_with_secret(tenant=alpha.tenant, scopes=["admin"])
    keyed = Client(HTTP_AUTHORIZATION=f"Bearer {secret}")
    staff = Client()
    staff.force_login(get_user_model().objects.create_user("staff-person", is_staff=True, is_superuser=True))
    urls = [reverse("admin:index")] + [
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
    ]
    assert staff.get(reverse("admin:index")).status_code == 200
    login = reverse("admin:login")
    for url in urls:
        for client in (Client(), member, keyed):
            response = client.get(url)
            assert response.status_code == 302 and response["Location"].startswith(login), (
                url,
                response.status_code,
            )
