from django.urls import path

from insights import api

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
]
