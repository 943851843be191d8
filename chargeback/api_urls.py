from django.urls import path

from chargeback.costs_api import CostsApi
from chargeback.integrations_api import LiteLlmCallbackApi
from chargeback.statement_api import (
    FocusExportApi,
    StatementCsvApi,
    StatementDetailApi,
    StatementFinalizeApi,
    StatementListApi,
    StatementPdfApi,
    StatementVoidApi,
)
from chargeback.usage_api import UsageApi

urlpatterns = [
    path("usage/", UsageApi.as_view(), name="usage"),
    path("costs/", CostsApi.as_view(), name="costs"),
    path("integrations/litellm/", LiteLlmCallbackApi.as_view(), name="integration-litellm"),
    path("statements/", StatementListApi.as_view(), name="statement-list"),
    path("statements/<int:pk>/", StatementDetailApi.as_view(), name="statement-detail"),
    path("statements/<int:pk>/pdf", StatementPdfApi.as_view(), name="statement-pdf"),
    path("statements/<int:pk>/csv", StatementCsvApi.as_view(), name="statement-csv"),
    path("statements/<int:pk>/finalize", StatementFinalizeApi.as_view(), name="statement-finalize"),
    path("statements/<int:pk>/void", StatementVoidApi.as_view(), name="statement-void"),
    path("exports/focus", FocusExportApi.as_view(), name="export-focus"),
]
