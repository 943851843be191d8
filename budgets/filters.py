import django_filters

from budgets.models import Budget, NotificationChannel


class BudgetFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")

    class Meta:
        model = Budget
        fields = ["tenant", "period", "action", "is_active", "model", "provider"]


class NotificationChannelFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")

    class Meta:
        model = NotificationChannel
        fields = ["tenant", "kind", "is_active"]
