import re

import django_filters
from rest_framework.exceptions import ValidationError

from chargeback.models import PricingSource, Statement, UsageRecord, UsageSource, UsageStatus
from tenants.models import Tenant
from tenants.selectors import tenant_descendant_ids

TAG_PARAMETER = re.compile(r"^tag\.([A-Za-z0-9_.:-]{1,64})$")


class UsageRecordFilterSet(django_filters.FilterSet):
    """Filters on the usage list. Any `tag.<key>=<value>` parameter filters on that tag too."""

    tenant = django_filters.CharFilter(method="filter_tenant", help_text="Tenant slug, with its descendants.")
    provider = django_filters.CharFilter(field_name="provider")
    model = django_filters.CharFilter(field_name="model")
    status = django_filters.ChoiceFilter(choices=UsageStatus.choices)
    pricing_source = django_filters.ChoiceFilter(choices=PricingSource.choices)
    source = django_filters.ChoiceFilter(choices=UsageSource.choices)
    start = django_filters.IsoDateTimeFilter(
        field_name="occurred_at", lookup_expr="gte", help_text="Inclusive, RFC 3339."
    )
    end = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt", help_text="Exclusive.")
    event_id = django_filters.CharFilter(field_name="event_id")
    prompt_hash = django_filters.CharFilter(field_name="prompt_hash")

    class Meta:
        model = UsageRecord
        fields = [
            "tenant",
            "provider",
            "model",
            "status",
            "pricing_source",
            "source",
            "start",
            "end",
            "event_id",
            "prompt_hash",
        ]

    def filter_tenant(self, queryset, name, value):
        root = Tenant.objects.filter(slug=value).values_list("id", flat=True).first()
        return queryset.filter(tenant_id__in=tenant_descendant_ids(root)) if root else queryset.none()

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        for parameter, value in self.data.items():
            if not parameter.startswith("tag."):
                continue
            match = TAG_PARAMETER.match(parameter)
            if not match:
                raise ValidationError({parameter: "Tag keys are 1-64 letters, digits or _ . : -"})
            queryset = queryset.filter(**{f"tags__{match.group(1)}": value})
        return queryset


class StatementFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")
    period = django_filters.CharFilter(field_name="period_key", help_text="YYYY-MM")
    status = django_filters.ChoiceFilter(choices=Statement.Status.choices)

    class Meta:
        model = Statement
        fields = ["tenant", "period", "status"]
