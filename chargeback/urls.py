from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from chargeback.api import HealthApi
from chargeback.integrations_api import OtlpTracesApi
from chargeback.metrics import metrics_view

api_v1 = [
    path("", include("tenants.urls")),
    path("", include("chargeback.api_urls")),
    path("", include("budgets.urls")),
    path("", include("insights.urls")),
    path("", include("audit.urls")),
]

urlpatterns = [
    path("healthz", HealthApi.as_view(), name="healthz"),
    # Prometheus scrapes /metrics by default; METRICS_TOKEN protects it with a bearer token.
    path("metrics", metrics_view, name="metrics"),
    # OTLP/HTTP exporters append /v1/traces to their base endpoint, so it lives at the root.
    path("v1/traces", OtlpTracesApi.as_view(), name="otlp-traces"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("admin/", admin.site.urls),
    # The pages for people (signed in with a Django user): overview, drill-down, budgets, statements.
    path("", include("dashboards.urls")),
]

handler400 = "chargeback.errors.json_bad_request"
handler403 = "chargeback.errors.json_permission_denied"
handler404 = "chargeback.errors.json_not_found"
handler500 = "chargeback.errors.json_server_error"
