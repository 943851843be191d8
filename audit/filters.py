import django_filters

from audit.models import AuditEvent
from tenants.models import Tenant
from tenants.selectors import tenant_descendant_ids


class AuditEventFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(method="filter_tenant", help_text="Tenant slug, with its descendants.")
    action = django_filters.CharFilter(field_name="action", help_text="e.g. budget.update")
    object_type = django_filters.CharFilter(field_name="object_type", help_text="e.g. budgets.budget")
    object_id = django_filters.CharFilter(field_name="object_id")
    actor_type = django_filters.ChoiceFilter(choices=AuditEvent.ActorType.choices)
    start = django_filters.IsoDateTimeFilter(
        field_name="occurred_at", lookup_expr="gte", help_text="Inclusive, RFC 3339."
    )
    end = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt", help_text="Exclusive.")

    class Meta:
        model = AuditEvent
        fields = ["tenant", "action", "object_type", "object_id", "actor_type", "start", "end"]

    def filter_tenant(self, queryset, name, value):
        root = Tenant.objects.filter(slug=value).values_list("id", flat=True).first()
        return queryset.filter(tenant_id__in=tenant_descendant_ids(root)) if root else queryset.none()
