from django.contrib import admin, messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from chargeback import money
from chargeback.models import (
    AllocationRule,
    PriceOverride,
    RerateAudit,
    SharedCostRule,
    Statement,
    StatementLine,
    UsageRecord,
    UsageRollupHourly,
)
from chargeback.services import (
    allocation_rule_delete,
    allocation_rule_save,
    price_override_delete,
    price_override_save,
    statement_finalize,
)


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

    # Changes go through the services, which audit them.
    def save_model(self, request, obj, form, change):
        price_override_save(override=obj, actor=request.user)

    def delete_model(self, request, obj):
        price_override_delete(override=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for override in queryset:
            price_override_delete(override=override, actor=request.user)


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


class StatementLineInline(admin.TabularInline):
    model = StatementLine
    fields = ["position", "kind", "description", "tenant_slug", "quantity", "unit", "unit_price", "amount"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="amount (USD)")
    def amount(self, line):
        return money.cents_to_str(line.amount_cents)


@admin.register(Statement)
class StatementAdmin(admin.ModelAdmin):
    """Statements are generated and finalized by services; here they are read, finalized or voided."""

    list_display = ["period_key", "tenant", "status", "number", "total", "finalized_at", "pdf_link"]
    list_filter = ["status", "period_key"]
    search_fields = ["number", "tenant__slug", "tenant_name"]
    list_select_related = ["tenant"]
    inlines = [StatementLineInline]
    actions = ["finalize"]
    exclude = ["pdf"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Statement._meta.fields if field.name != "pdf"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return obj is None or obj.status == Statement.Status.DRAFT

    def has_delete_permission(self, request, obj=None):
        return obj is not None and obj.status == Statement.Status.DRAFT

    @admin.display(description="total (USD)", ordering="total_cents")
    def total(self, statement):
        return money.cents_to_str(statement.total_cents)

    @admin.display(description="PDF")
    def pdf_link(self, statement):
        return format_html('<a href="{}">PDF</a>', reverse("admin-statement-pdf", args=[statement.pk]))

    def get_urls(self):
        return [
            path("<int:pk>/pdf/", self.admin_site.admin_view(self.pdf_view), name="admin-statement-pdf"),
            *super().get_urls(),
        ]

    def pdf_view(self, request, pk):
        from chargeback.statement_documents import statement_pdf_render

        statement = get_object_or_404(Statement.objects.select_related("tenant"), pk=pk)
        pdf = bytes(statement.pdf) if statement.pdf else statement_pdf_render(statement)
        return HttpResponse(pdf, content_type="application/pdf")

    @admin.action(description="Finalize selected drafts")
    def finalize(self, request, queryset):
        for statement in queryset.filter(status=Statement.Status.DRAFT):
            finalized = statement_finalize(statement_id=statement.pk, actor=request.user)
            messages.success(request, f"{finalized.tenant.slug} {finalized.period_key}: {finalized.number}")


@admin.register(AllocationRule)
class AllocationRuleAdmin(admin.ModelAdmin):
    list_display = ["precedence", "name", "tag_key", "tag_value", "target", "scope", "is_active"]
    list_filter = ["is_active", "tag_key"]
    autocomplete_fields = ["target", "scope"]

    # Changes go through the services, which audit them.
    def save_model(self, request, obj, form, change):
        allocation_rule_save(rule=obj, actor=request.user)

    def delete_model(self, request, obj):
        allocation_rule_delete(rule=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for rule in queryset:
            allocation_rule_delete(rule=rule, actor=request.user)


@admin.register(SharedCostRule)
class SharedCostRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "pool", "method", "owner"]
    autocomplete_fields = ["pool", "owner"]
    filter_horizontal = ["targets"]
