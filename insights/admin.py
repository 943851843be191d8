from django.contrib import admin

from chargeback.admin import ReadOnlyAdmin
from insights.models import AlertRule, AlertRuleEvent, Anomaly, AnomalySubscription, Forecast


@admin.register(Anomaly)
class AnomalyAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "tenant",
        "granularity",
        "dimension",
        "dimension_value",
        "direction",
        "started_at",
        "ended_at",
        "impact_nanos",
        "impact_percent",
        "status",
        "feedback",
    ]
    list_filter = ["status", "feedback", "granularity", "dimension", "direction"]
    search_fields = ["tenant__slug", "dimension_value"]
    list_select_related = ["tenant"]
    date_hierarchy = "started_at"
    # Detection owns the figures; people change the status and give feedback.
    readonly_fields = [
        field.name
        for field in Anomaly._meta.fields
        if field.name not in ("status", "feedback", "feedback_note")
    ]


@admin.register(AnomalySubscription)
class AnomalySubscriptionAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "min_impact_nanos", "min_impact_percent", "frequency", "is_active"]
    list_filter = ["frequency", "is_active"]
    search_fields = ["name", "tenant__slug"]
    autocomplete_fields = ["tenant"]


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "tenant",
        "metric",
        "window",
        "comparison",
        "threshold",
        "consecutive_windows",
        "is_active",
    ]
    list_filter = ["metric", "window", "is_active"]
    search_fields = ["name", "tenant__slug", "feature", "model"]
    autocomplete_fields = ["tenant"]


@admin.register(AlertRuleEvent)
class AlertRuleEventAdmin(ReadOnlyAdmin):
    list_display = ["pk", "rule", "fired_at", "value", "peak_value", "resolved_at"]
    list_select_related = ["rule__tenant"]


@admin.register(Forecast)
class ForecastAdmin(ReadOnlyAdmin):
    list_display = [
        "tenant",
        "kind",
        "budget",
        "period_key",
        "forecast_nanos",
        "lower_nanos",
        "upper_nanos",
        "method",
    ]
    list_filter = ["kind", "method"]
    list_select_related = ["tenant", "budget"]
