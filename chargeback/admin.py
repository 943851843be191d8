from django.contrib import admin

from chargeback import money
from chargeback.models import PriceOverride, RerateAudit, UsageRecord, UsageRollupHourly


class ReadOnlyAdmin(admin.ModelAdmin):
    """Ledger rows are written by services only; the admin shows them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "occurred_at",
        "tenant",
        "event_id",
        "provider",
        "model",
        "cost_usd",
        "pricing_source",
        "status",
    ]
    list_filter = ["pricing_source", "status", "source", "provider"]
    search_fields = ["event_id", "model", "tenant__slug"]
    date_hierarchy = "occurred_at"
    list_select_related = ["tenant"]
    show_full_result_count = False

    @admin.display(description="cost (USD)", ordering="cost_nanos")
    def cost_usd(self, record):
        return money.nanos_to_str(record.cost_nanos) if record.cost_nanos is not None else "unpriced"


@admin.register(UsageRollupHourly)
class UsageRollupHourlyAdmin(ReadOnlyAdmin):
    list_display = [
        "hour",
        "tenant",
        "provider",
        "model",
        "feature",
        "status",
        "requests",
        "unpriced_requests",
    ]
    list_filter = ["provider", "status"]
    date_hierarchy = "hour"
    list_select_related = ["tenant"]


@admin.register(PriceOverride)
class PriceOverrideAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "provider",
        "tenant",
        "valid_from",
        "valid_to",
        "input_per_mtok",
        "output_per_mtok",
    ]
    list_filter = ["provider"]
    search_fields = ["model", "tenant__slug", "note"]
    autocomplete_fields = ["tenant"]


@admin.register(RerateAudit)
class RerateAuditAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "tenant",
        "period_start",
        "period_end",
        "records",
        "before",
        "after",
        "actor",
    ]

    @admin.display(description="before (USD)")
    def before(self, audit):
        return money.nanos_to_str(audit.cost_nanos_before)

    @admin.display(description="after (USD)")
    def after(self, audit):
        return money.nanos_to_str(audit.cost_nanos_after)
