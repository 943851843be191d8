from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils import timezone

from budgets.models import (
    Budget,
    BudgetAlert,
    BudgetThreshold,
    NotificationChannel,
    NotificationDelivery,
    RoutingPolicy,
    RoutingRule,
)
from budgets.notifications import notification_channel_send_test
from budgets.routing_services import routing_policy_delete, routing_policy_save
from budgets.selectors import budget_status
from budgets.services import (
    budget_delete,
    budget_save,
    notification_channel_delete,
    notification_channel_save,
)
from budgets.webhook_targets import notification_target_validate
from chargeback import money
from chargeback.admin import ReadOnlyAdmin

# Notification channels and deliveries ---------------------------------------------------------


class NotificationChannelAdminForm(forms.ModelForm):
    class Meta:
        model = NotificationChannel
        fields = ["tenant", "name", "kind", "target", "secret", "is_active"]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("kind") and cleaned.get("target"):
            try:
                notification_target_validate(kind=cleaned["kind"], target=cleaned["target"])
            except ValidationError as error:
                self.add_error(None, error)
        return cleaned


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    form = NotificationChannelAdminForm
    list_display = ["name", "tenant", "kind", "target", "is_active", "created_at"]
    list_filter = ["kind", "is_active", "tenant"]
    search_fields = ["name", "target", "tenant__slug"]
    autocomplete_fields = ["tenant"]
    list_select_related = ["tenant"]
    actions = ["send_test"]

    # Changes go through the services, which check targets and audit them.
    def save_model(self, request, obj, form, change):
        notification_channel_save(channel=obj, actor=request.user)

    def delete_model(self, request, obj):
        notification_channel_delete(channel=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for channel in queryset:
            notification_channel_delete(channel=channel, actor=request.user)

    @admin.action(description="Send test notification")
    def send_test(self, request, queryset):
        for channel in queryset.select_related("tenant"):
            delivery = notification_channel_send_test(channel=channel)
            if delivery.status == NotificationDelivery.Status.SENT:
                code = f" (HTTP {delivery.response_code})" if delivery.response_code else ""
                messages.success(request, f"{channel}: test notification sent{code}.")
            else:
                messages.error(request, f"{channel}: test notification failed: {delivery.last_error}")


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "created_at",
        "channel",
        "channel_kind",
        "alert",
        "status",
        "attempts",
        "response_code",
        "updated_at",
    ]
    list_filter = ["status", "channel__kind"]
    search_fields = ["channel__name", "channel__tenant__slug", "last_error"]
    list_select_related = ["channel", "alert__budget__tenant", "alert__threshold"]
    date_hierarchy = "created_at"

    @admin.display(description="kind", ordering="channel__kind")
    def channel_kind(self, delivery):
        return delivery.channel.get_kind_display()


# Budgets ----------------------------------------------------------------------------------------


def _inline_rows(formsets, model, fields: tuple[str, ...]) -> list[dict]:
    """The rows an inline of `model` holds after the edit (kept, changed and new; not deleted or
    empty), as dicts of `fields`: the services replace an object's rows with them in one audited
    change, so the formsets themselves write nothing."""
    rows = []
    for formset in formsets:
        formset.save(commit=False)  # only for the admin's change message; nothing is written
        if formset.model is not model:
            continue
        for row_form in formset.forms:
            if formset._should_delete_form(row_form) or not row_form.cleaned_data:
                continue
            if row_form.instance.pk is None and not row_form.has_changed():
                continue  # an empty extra row
            rows.append({name: row_form.cleaned_data[name] for name in fields})
    return rows


class BudgetThresholdInline(admin.TabularInline):
    model = BudgetThreshold
    extra = 1


class BudgetAdminForm(forms.ModelForm):
    amount_usd = forms.DecimalField(
        label="Amount (USD)", max_digits=18, decimal_places=9, min_value=Decimal("0.01")
    )

    class Meta:
        model = Budget
        fields = [
            "tenant", "name", "amount_usd", "period", "week_start", "fixed_start", "fixed_end", "provider", "model",
            "tag_key", "tag_value", "action", "fallback_model", "fail_mode", "is_active",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["amount_usd"] = money.nanos_to_decimal(self.instance.amount_nanos)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("amount_usd") is not None:
            self.instance.amount_nanos = money.usd_to_nanos(cleaned["amount_usd"])
        return cleaned


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    form = BudgetAdminForm
    inlines = [BudgetThresholdInline]
    list_display = [
        "name",
        "tenant",
        "period",
        "amount",
        "spent",
        "percent_used",
        "period_end",
        "action",
        "is_active",
    ]
    list_filter = ["period", "action", "is_active", "fail_mode", "tenant"]
    search_fields = ["name", "tenant__slug", "model"]
    autocomplete_fields = ["tenant"]
    list_select_related = ["tenant"]

    def save_model(self, request, obj, form, change):
        pass  # saved in save_related, with its thresholds, as one audited change

    def save_related(self, request, form, formsets, change):
        thresholds = _inline_rows(formsets, BudgetThreshold, ("percent", "on_actual", "on_forecast"))
        budget_save(budget=form.instance, thresholds=thresholds, actor=request.user)

    def delete_model(self, request, obj):
        budget_delete(budget=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for budget in queryset:
            budget_delete(budget=budget, actor=request.user)

    @staticmethod
    def _status(budget):
        # Kept on the row's object: the changelist shows the one status in several columns.
        if not hasattr(budget, "_admin_status"):
            budget._admin_status = budget_status(budget, timezone.now())
        return budget._admin_status

    @admin.display(description="amount (USD)", ordering="amount_nanos")
    def amount(self, budget):
        return money.nanos_to_str(budget.amount_nanos)

    @admin.display(description="spent this period (USD)")
    def spent(self, budget):
        return money.nanos_to_str(self._status(budget)["spent_nanos"])

    @admin.display(description="used")
    def percent_used(self, budget):
        return f"{self._status(budget)['percent_used']:.1f}%"

    @admin.display(description="period ends")
    def period_end(self, budget):
        return self._status(budget)["period"].end


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "budget", "period_key", "threshold", "kind", "spent", "forecast"]
    list_filter = ["kind", "budget__tenant"]
    list_select_related = ["budget__tenant", "threshold"]
    date_hierarchy = "created_at"

    @admin.display(description="spent (USD)")
    def spent(self, alert):
        return money.nanos_to_str(alert.spent_nanos)

    @admin.display(description="forecast (USD)")
    def forecast(self, alert):
        return money.nanos_to_str(alert.forecast_nanos)


# Routing policies --------------------------------------------------------------------------------


class RoutingRuleInline(admin.TabularInline):
    model = RoutingRule
    extra = 1
    fields = (
        "position",
        "tag_key",
        "tag_value",
        "from_model",
        "min_budget_percent",
        "max_input_tokens",
        "target_model",
        "target_provider",
    )


@admin.register(RoutingPolicy)
class RoutingPolicyAdmin(admin.ModelAdmin):
    inlines = [RoutingRuleInline]
    list_display = ["name", "tenant", "precedence", "share", "split_tag", "active_from", "is_active"]
    list_filter = ["is_active", "tenant"]
    search_fields = ["name", "tenant__slug"]
    autocomplete_fields = ["tenant"]
    list_select_related = ["tenant"]

    def save_model(self, request, obj, form, change):
        pass  # saved in save_related, with its rules, as one audited change

    def save_related(self, request, form, formsets, change):
        rules = _inline_rows(formsets, RoutingRule, RoutingRuleInline.fields)
        routing_policy_save(policy=form.instance, rules=rules, actor=request.user)

    def delete_model(self, request, obj):
        routing_policy_delete(policy=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for policy in queryset:
            routing_policy_delete(policy=policy, actor=request.user)
