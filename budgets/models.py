from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.models import Tenant
from tenants.scoping import TenantScopedQuerySet


class BudgetQuerySet(TenantScopedQuerySet):
    pass


class Budget(models.Model):
    """A spending limit on a tenant and everything below it, per period of the tenant's calendar."""

    class Period(models.TextChoices):
        DAY = "day", "Day"
        WEEK = "week", "Week"
        MONTH = "month", "Calendar month"
        QUARTER = "quarter", "Quarter"
        FIXED = "fixed", "Fixed range"

    class Action(models.TextChoices):
        NOTIFY = "notify", "Notify"
        BLOCK = "block", "Block"

    class FailMode(models.TextChoices):
        OPEN = "open", "Allow when counters cannot be read"
        CLOSED = "closed", "Deny when counters cannot be read"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="budgets")
    name = models.CharField(max_length=200)
    amount_nanos = models.BigIntegerField(validators=[MinValueValidator(1)])
    period = models.CharField(max_length=10, choices=Period.choices, default=Period.MONTH)
    # 0 = Monday ... 6 = Sunday, for weekly budgets.
    week_start = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(6)])
    fixed_start = models.DateTimeField(null=True, blank=True)
    fixed_end = models.DateTimeField(null=True, blank=True)
    provider = models.CharField(max_length=100, blank=True, help_text="Only this provider (normalised).")
    model = models.CharField(max_length=200, blank=True, help_text="Only this model (normalised).")
    tag_key = models.CharField(max_length=64, blank=True)
    tag_value = models.CharField(max_length=256, blank=True)
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.NOTIFY)
    fallback_model = models.CharField(
        max_length=200, blank=True, help_text="Cheaper model to suggest when blocked."
    )
    fail_mode = models.CharField(max_length=10, choices=FailMode.choices, default=FailMode.OPEN)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BudgetQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "name"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(period="fixed") | Q(fixed_start__isnull=False, fixed_end__isnull=False),
                name="budget_fixed_range_required",
            ),
            models.CheckConstraint(
                condition=Q(fixed_end__isnull=True)
                | Q(fixed_start__isnull=True)
                | Q(fixed_end__gt=models.F("fixed_start")),
                name="budget_fixed_range_order",
            ),
            models.CheckConstraint(
                condition=Q(tag_key="") | ~Q(tag_value=""), name="budget_tag_value_required"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}: {self.name}"


class BudgetThreshold(models.Model):
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="thresholds")
    percent = models.DecimalField(max_digits=6, decimal_places=2, validators=[MinValueValidator(0)])
    on_actual = models.BooleanField(default=True)
    on_forecast = models.BooleanField(default=False)

    class Meta:
        ordering = ["percent"]
        constraints = [models.UniqueConstraint(fields=["budget", "percent"], name="threshold_unique_percent")]

    def __str__(self) -> str:
        return f"{self.percent}%"


class BudgetAlertQuerySet(TenantScopedQuerySet):
    tenant_field = "budget__tenant_id"


class BudgetAlert(models.Model):
    """A threshold crossing. At most one per (budget, period, threshold, kind), by constraint."""

    class Kind(models.TextChoices):
        ACTUAL = "actual", "Actual spend"
        FORECAST = "forecast", "Forecast spend"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    threshold = models.ForeignKey(BudgetThreshold, on_delete=models.CASCADE, related_name="alerts")
    period_key = models.CharField(max_length=40)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    spent_nanos = models.BigIntegerField()
    forecast_nanos = models.BigIntegerField(null=True, blank=True)
    amount_nanos = models.BigIntegerField()
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BudgetAlertQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_key", "threshold", "kind"], name="alert_once_per_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.period_key} {self.threshold} {self.kind}"


class NotificationChannelQuerySet(TenantScopedQuerySet):
    pass


class NotificationChannel(models.Model):
    """Where a tenant's alerts go. A tenant without channels uses its nearest ancestor's."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (HMAC-signed JSON)"
        EMAIL = "email", "E-mail"
        SLACK = "slack", "Slack-compatible incoming webhook"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="notification_channels")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    target = models.CharField(max_length=500, help_text="URL for webhooks, address for e-mail.")
    secret = models.CharField(max_length=200, blank=True, help_text="HMAC-SHA256 key for webhook signatures.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = NotificationChannelQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class NotificationDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    alert = models.ForeignKey(
        BudgetAlert, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    # What a delivery without a budget alert is about (an anomaly, an alert rule's event, a digest),
    # e.g. "anomaly:42:subscription:3": sent once per channel and key, like alerts.
    dedupe_key = models.CharField(max_length=200, blank=True, default="")
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "notification deliveries"
        constraints = [
            # One delivery of an alert per channel, even when evaluations race.
            models.UniqueConstraint(fields=["channel", "alert"], name="delivery_once_per_channel"),
            models.UniqueConstraint(
                fields=["channel", "dedupe_key"],
                condition=~Q(dedupe_key=""),
                name="delivery_once_per_channel_and_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk} {self.status}"


class RoutingPolicyQuerySet(TenantScopedQuerySet):
    pass


class RoutingPolicy(models.Model):
    """Suggests another (usually cheaper) model for some calls of a tenant and everything below it.

    The allowance check tries the active policies of the caller's tenant and its ancestors, by
    precedence (lower first; then the nearest tenant), and in each its rules in position order: the
    first rule whose conditions all hold chooses the model (budgets.routing_selectors). A policy
    with `share` below 1 is an A/B test: a stable hash of the policy and the call's `split_tag`
    value puts the call in the policy arm (the rule's model is suggested) or the control arm
    (nothing is); calls without that tag are left out of it.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="routing_policies")
    name = models.CharField(max_length=200)
    precedence = models.PositiveIntegerField(default=100, help_text="Lower is tried first.")
    share = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=1,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text="Share of matching traffic in the policy arm (1: all of it; below 1: an A/B test).",
    )
    split_tag = models.CharField(
        max_length=64,
        blank=True,
        help_text="Tag whose value decides the arm (e.g. user or session): required when share < 1.",
    )
    active_from = models.DateTimeField(
        default=timezone.now,
        help_text="When the policy took effect: its report compares cost per request before and after.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RoutingPolicyQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "precedence", "name"]
        verbose_name_plural = "routing policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(share__gte=0) & Q(share__lte=1), name="routing_policy_share_range"
            ),
            models.CheckConstraint(
                condition=Q(share=1) | ~Q(split_tag=""), name="routing_policy_split_tag_required"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}: {self.name}"


class RoutingRuleQuerySet(TenantScopedQuerySet):
    tenant_field = "policy__tenant_id"


class RoutingRule(models.Model):
    """One way a policy routes: when every condition given holds, use `target_model`. Conditions:
    a tag value (e.g. feature=search), the model asked for, an applicable budget at least
    `min_budget_percent` used, and an input estimate below `max_input_tokens`."""

    policy = models.ForeignKey(RoutingPolicy, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveSmallIntegerField(help_text="Rules of a policy are tried in this order.")
    tag_key = models.CharField(max_length=64, blank=True)
    tag_value = models.CharField(max_length=256, blank=True)
    from_model = models.CharField(
        max_length=200, blank=True, help_text="Only calls asking for this model (normalised); empty: any."
    )
    min_budget_percent = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Only when an applicable budget is at least this percent used.",
    )
    max_input_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Only when the call's estimated input tokens are below this."
    )
    target_model = models.CharField(max_length=200, help_text="The model to use (normalised).")
    target_provider = models.CharField(max_length=100, blank=True)

    objects = RoutingRuleQuerySet.as_manager()

    class Meta:
        ordering = ["policy", "position"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "position"], name="routing_rule_position_unique"),
            models.CheckConstraint(
                condition=Q(tag_key="") | ~Q(tag_value=""), name="routing_rule_tag_value_required"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.policy} #{self.position}: {self.description}"

    @property
    def description(self) -> str:
        """The rule in words, e.g. 'feature=search, budget >= 80% used -> gpt-4o-mini'."""
        conditions = []
        if self.tag_key:
            conditions.append(f"{self.tag_key}={self.tag_value}")
        if self.from_model:
            conditions.append(f"model {self.from_model}")
        if self.min_budget_percent is not None:
            conditions.append(f"budget >= {self.min_budget_percent.normalize():f}% used")
        if self.max_input_tokens is not None:
            conditions.append(f"input < {self.max_input_tokens} tokens")
        return f"{', '.join(conditions) or 'any call'} -> {self.target_model}"
