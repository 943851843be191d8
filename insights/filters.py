import django_filters

from chargeback import money
from insights.models import AlertRule, AlertRuleEvent, Anomaly, AnomalySubscription, Forecast


class AnomalyFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")
    started_after = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt")
    # Bounded so that the amount in nanos fits the database's 64-bit integers (a 400 otherwise).
    min_impact_usd = django_filters.NumberFilter(
        method="filter_min_impact", label="Minimum |impact| in USD", min_value=0, max_value=10**9
    )

    class Meta:
        model = Anomaly
        fields = ["tenant", "status", "feedback", "granularity", "dimension", "dimension_value", "direction"]

    def filter_min_impact(self, queryset, name, value):
        nanos = money.usd_to_nanos(value)
        return queryset.filter(impact_nanos__gte=nanos) | queryset.filter(impact_nanos__lte=-nanos)


class AnomalySubscriptionFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")

    class Meta:
        model = AnomalySubscription
        fields = ["tenant", "frequency", "is_active"]


class AlertRuleFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")

    class Meta:
        model = AlertRule
        fields = ["tenant", "metric", "window", "is_active"]


class AlertRuleEventFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="rule__tenant__slug")
    firing = django_filters.BooleanFilter(field_name="resolved_at", lookup_expr="isnull")

    class Meta:
        model = AlertRuleEvent
        fields = ["tenant", "rule", "firing"]


class ForecastFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")

    class Meta:
        model = Forecast
        fields = ["tenant", "kind", "budget", "period_key"]
