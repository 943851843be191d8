import django_filters

from tenants.models import Tenant
from tenants.selectors import tenant_descendant_ids


class TenantFilterSet(django_filters.FilterSet):
    parent = django_filters.CharFilter(field_name="parent__slug", help_text="Direct children of this slug.")
    within = django_filters.CharFilter(
        method="filter_within", help_text="This slug and all tenants below it."
    )
    search = django_filters.CharFilter(method="filter_search", help_text="Substring of slug or name.")

    class Meta:
        model = Tenant
        fields = ["kind", "is_active", "parent", "within", "search"]

    def filter_within(self, queryset, name, value):
        root = Tenant.objects.filter(slug=value).values_list("id", flat=True).first()
        return queryset.filter(id__in=tenant_descendant_ids(root)) if root else queryset.none()

    def filter_search(self, queryset, name, value):
        return queryset.filter(slug__icontains=value) | queryset.filter(name__icontains=value)
