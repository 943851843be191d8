from django.urls import path

from insights import api, optimisation_api

urlpatterns = [
    path("anomalies/", api.AnomalyListApi.as_view(), name="anomaly-list"),
    path("anomalies/<int:pk>/", api.AnomalyDetailApi.as_view(), name="anomaly-detail"),
    path("anomalies/<int:pk>/acknowledge", api.AnomalyAcknowledgeApi.as_view(), name="anomaly-acknowledge"),
    path("anomalies/<int:pk>/resolve", api.AnomalyResolveApi.as_view(), name="anomaly-resolve"),
    path("anomalies/<int:pk>/feedback", api.AnomalyFeedbackApi.as_view(), name="anomaly-feedback"),
    path(
        "anomaly-subscriptions/", api.AnomalySubscriptionListApi.as_view(), name="anomaly-subscription-list"
    ),
    path(
        "anomaly-subscriptions/<int:pk>/",
        api.AnomalySubscriptionDetailApi.as_view(),
        name="anomaly-subscription-detail",
    ),
    path("alert-rules/", api.AlertRuleListApi.as_view(), name="alert-rule-list"),
    path("alert-rules/<int:pk>/", api.AlertRuleDetailApi.as_view(), name="alert-rule-detail"),
    path("alert-rule-events/", api.AlertRuleEventListApi.as_view(), name="alert-rule-event-list"),
    path("forecasts/", api.ForecastListApi.as_view(), name="forecast-list"),
    path("forecasts/<int:pk>/", api.ForecastDetailApi.as_view(), name="forecast-detail"),
    path("optimisation/costliest/", optimisation_api.CostliestApi.as_view(), name="optimisation-costliest"),
    path("optimisation/caching/", optimisation_api.CachingApi.as_view(), name="optimisation-caching"),
    path("optimisation/what-if/", optimisation_api.WhatIfApi.as_view(), name="optimisation-what-if"),
    path("optimisation/savings/", optimisation_api.SavingsApi.as_view(), name="optimisation-savings"),
    path(
        "optimisation/savings/csv", optimisation_api.SavingsCsvApi.as_view(), name="optimisation-savings-csv"
    ),
    path(
        "optimisation/savings/pdf", optimisation_api.SavingsPdfApi.as_view(), name="optimisation-savings-pdf"
    ),
    path(
        "routing-policies/<int:pk>/report",
        optimisation_api.RoutingPolicyReportApi.as_view(),
        name="routing-policy-report",
    ),
]
