from decimal import Decimal

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chargeback.pricing import model_id_for
from chargeback.serializers import NanosAsUsdField, UsdAmountField
from insights.models import (
    AlertRule,
    AlertRuleEvent,
    Anomaly,
    AnomalySubscription,
    Forecast,
    RootCauseDimension,
)
from tenants.serializers import TenantSlugField


class RootCauseSerializer(serializers.Serializer):
    dimension = serializers.ChoiceField(choices=RootCauseDimension.choices)
    value = serializers.CharField()
    actual_usd = NanosAsUsdField(source="actual_nanos")
    expected_usd = NanosAsUsdField(source="expected_nanos")
    impact_usd = NanosAsUsdField(source="impact_nanos")
    share = serializers.FloatField(help_text="Share of the dimension's impact in the anomaly's direction.")


class AnomalyPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    actual_usd = NanosAsUsdField(source="actual_nanos")
    expected_usd = NanosAsUsdField(source="expected_nanos")
    score = serializers.FloatField()
    rule = serializers.CharField(allow_blank=True)


class AnomalySerializer(serializers.ModelSerializer):
    """An anomaly as the cloud providers report one: actual vs expected, impact, root causes."""

    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    actual_usd = NanosAsUsdField(source="actual_nanos")
    expected_usd = NanosAsUsdField(source="expected_nanos")
    # Empty until someone gives feedback.
    feedback = serializers.ChoiceField(choices=Anomaly.Feedback.choices, allow_blank=True, read_only=True)
    impact_usd = NanosAsUsdField(source="impact_nanos")
    max_impact_usd = NanosAsUsdField(source="max_impact_nanos")
    root_causes = RootCauseSerializer(many=True, read_only=True)

    class Meta:
        model = Anomaly
        fields = [
            "id",
            "tenant",
            "granularity",
            "dimension",
            "dimension_value",
            "direction",
            "started_at",
            "ended_at",
            "actual_usd",
            "expected_usd",
            "impact_usd",
            "impact_percent",
            "max_impact_usd",
            "current_score",
            "max_score",
            "rule",
            "root_causes",
            "status",
            "feedback",
            "feedback_note",
            "acknowledged_at",
            "resolved_at",
            "notified_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AnomalyDetailSerializer(AnomalySerializer):
    points = AnomalyPointSerializer(many=True, read_only=True)

    class Meta(AnomalySerializer.Meta):
        fields = [*AnomalySerializer.Meta.fields, "points"]
        read_only_fields = fields


class AnomalyFeedbackSerializer(serializers.Serializer):
    feedback = serializers.ChoiceField(choices=Anomaly.Feedback.choices)
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class AnomalySubscriptionSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()
    min_impact_usd = UsdAmountField(source="min_impact_nanos", min_value=Decimal(0), required=False)
    min_impact_percent = serializers.DecimalField(
        max_digits=8, decimal_places=2, min_value=Decimal(0), required=False
    )

    class Meta:
        model = AnomalySubscription
        fields = [
            "id",
            "tenant",
            "name",
            "min_impact_usd",
            "min_impact_percent",
            "frequency",
            "include_decreases",
            "is_active",
            "last_digest_at",
            "created_at",
        ]
        read_only_fields = ["id", "last_digest_at", "created_at"]


class AlertRuleSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()
    threshold = serializers.DecimalField(
        max_digits=24,
        decimal_places=9,
        help_text="In the metric's unit: USD for cost and cost per 1K tokens, ms for latency, a fraction for error rate.",
    )
    firing = serializers.SerializerMethodField()

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "tenant",
            "name",
            "metric",
            "window",
            "comparison",
            "threshold",
            "consecutive_windows",
            "feature",
            "model",
            "include_descendants",
            "is_active",
            "firing",
            "created_at",
        ]
        read_only_fields = ["id", "firing", "created_at"]

    @extend_schema_field(serializers.BooleanField())
    def get_firing(self, rule: AlertRule) -> bool:
        return any(event.resolved_at is None for event in rule.events.all())

    def validate_model(self, value: str) -> str:
        return model_id_for("", value) if value else value


class AlertRuleEventSerializer(serializers.ModelSerializer):
    rule = serializers.PrimaryKeyRelatedField(read_only=True)
    rule_name = serializers.CharField(source="rule.name", read_only=True)
    tenant = serializers.CharField(source="rule.tenant.slug", read_only=True)

    class Meta:
        model = AlertRuleEvent
        fields = [
            "id",
            "rule",
            "rule_name",
            "tenant",
            "fired_at",
            "window_start",
            "value",
            "last_value",
            "peak_value",
            "resolved_at",
        ]
        read_only_fields = fields


class ForecastSerializer(serializers.ModelSerializer):
    """Spend at the end of a period with its 80 % prediction interval."""

    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    budget = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    actual_usd = NanosAsUsdField(source="actual_nanos")
    forecast_usd = NanosAsUsdField(source="forecast_nanos")
    lower_usd = NanosAsUsdField(source="lower_nanos", help_text="10th percentile.")
    upper_usd = NanosAsUsdField(source="upper_nanos", help_text="90th percentile.")

    class Meta:
        model = Forecast
        fields = [
            "id",
            "tenant",
            "kind",
            "budget",
            "period_key",
            "period_start",
            "period_end",
            "computed_at",
            "actual_usd",
            "forecast_usd",
            "lower_usd",
            "upper_usd",
            "method",
            "history_days",
        ]
        read_only_fields = fields
