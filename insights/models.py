from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from budgets.models import Budget
from tenants.models import Tenant
from tenants.scoping import TenantScopedQuerySet


class Granularity(models.TextChoices):
    HOUR = "hour", "Hourly"
    DAY = "day", "Daily"


class SeriesDimension(models.TextChoices):
    """What a spend series sums: a tenant's whole subtree, or one feature or model of its own usage."""

    TOTAL = "total", "Tenant total (with descendants)"
    FEATURE = "feature", "Feature of the tenant's own usage"
    MODEL = "model", "Model of the tenant's own usage"


class RootCauseDimension(models.TextChoices):
    FEATURE = "feature", "Feature"
    MODEL = "model", "Model"
    TENANT = "tenant", "Child tenant"
    PROMPT_TEMPLATE = "prompt_template", "Prompt template"


class AnomalyQuerySet(TenantScopedQuerySet):
    pass


class Anomaly(models.Model):
    """Spend that departed from its expected value on one series, shaped like the cloud providers'
    anomaly reports: actual and expected spend, dollar and percent impact, ranked root causes.

    Ongoing anomalies are extended, not duplicated: at most one unresolved anomaly per series, by
    constraint. `points` keeps each anomalous point (UTC start, actual and expected nanos, score),
    from which the sums are recomputed when late data changes a point.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    class Feedback(models.TextChoices):
        TRUE_POSITIVE = "true_positive", "Yes, an anomaly"
        FALSE_POSITIVE = "false_positive", "No, not an anomaly"
        PLANNED = "planned", "Planned activity"

    class Direction(models.TextChoices):
        INCREASE = "increase", "Spend above expected"
        DECREASE = "decrease", "Spend below expected"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="anomalies")
    granularity = models.CharField(max_length=4, choices=Granularity.choices)
    dimension = models.CharField(max_length=10, choices=SeriesDimension.choices)
    dimension_value = models.CharField(
        max_length=200, blank=True, help_text="Feature or model; empty for totals."
    )
    direction = models.CharField(max_length=10, choices=Direction.choices)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(help_text="End of the last anomalous point (exclusive).")
    actual_nanos = models.BigIntegerField()
    expected_nanos = models.BigIntegerField()
    impact_nanos = models.BigIntegerField(help_text="Actual minus expected over the anomalous points.")
    impact_percent = models.DecimalField(
        max_digits=12, decimal_places=2, null=True, blank=True, help_text="None when expected is 0."
    )
    max_impact_nanos = models.BigIntegerField(help_text="Largest impact of a single point.")
    current_score = models.FloatField()
    max_score = models.FloatField()
    rule = models.CharField(max_length=20, help_text="The detector rule that first flagged it.")
    points = models.JSONField(default=list)
    root_causes = models.JSONField(default=list)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    feedback = models.CharField(max_length=20, choices=Feedback.choices, blank=True)
    feedback_note = models.CharField(max_length=500, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AnomalyQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-pk"]
        verbose_name_plural = "anomalies"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "granularity", "dimension", "dimension_value"],
                condition=~Q(status="resolved"),
                name="anomaly_one_ongoing_per_series",
            ),
            models.CheckConstraint(
                condition=Q(ended_at__gt=models.F("started_at")), name="anomaly_period_order"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "started_at"], name="anomaly_tenant_start_idx")]

    def __str__(self) -> str:
        series = self.dimension if not self.dimension_value else f"{self.dimension}={self.dimension_value}"
        return f"{self.tenant} {series} ({self.granularity}) from {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def description(self) -> str:
        """One line for people (the dashboards show it under the anomaly)."""
        from chargeback import money

        percent = f" ({self.impact_percent:+}%)" if self.impact_percent is not None else ""
        causes = ", ".join(f"{cause['dimension']} {cause['value']}" for cause in self.root_causes[:2])
        text = (
            f"{money.nanos_to_str(self.actual_nanos)} USD spent, {money.nanos_to_str(self.expected_nanos)} expected"
            f"{percent}"
        )
        return f"{text}; mostly {causes}" if causes else text


class AnomalySubscriptionQuerySet(TenantScopedQuerySet):
    pass


class AnomalySubscription(models.Model):
    """Who hears about anomalies of a tenant and everything below it, and from what impact on.

    Subscriptions gate notifications, never detection: every anomaly is recorded and listed; only
    those at or above both minimums are sent, immediately or in a daily digest, to the tenant's
    notification channels (budgets' channels; a tenant without any uses its nearest ancestor's).
    """

    class Frequency(models.TextChoices):
        IMMEDIATE = "immediate", "Immediately"
        DAILY = "daily", "Daily digest"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="anomaly_subscriptions")
    name = models.CharField(max_length=200)
    min_impact_nanos = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    min_impact_percent = models.DecimalField(
        max_digits=8, decimal_places=2, default=0, validators=[MinValueValidator(0)]
    )
    frequency = models.CharField(max_length=10, choices=Frequency.choices, default=Frequency.IMMEDIATE)
    include_decreases = models.BooleanField(default=False, help_text="Also notify of spend below expected.")
    is_active = models.BooleanField(default=True)
    last_digest_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AnomalySubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "name"]

    def __str__(self) -> str:
        return f"{self.tenant}: {self.name}"


class AnomalyNotification(models.Model):
    """That a subscription was notified of an anomaly (immediately or in a digest): once each."""

    subscription = models.ForeignKey(
        AnomalySubscription, on_delete=models.CASCADE, related_name="notifications"
    )
    anomaly = models.ForeignKey(Anomaly, on_delete=models.CASCADE, related_name="notifications")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subscription", "anomaly"], name="anomaly_notified_once")
        ]

    def __str__(self) -> str:
        return f"{self.subscription} <- anomaly {self.anomaly_id}"


class AlertRuleQuerySet(TenantScopedQuerySet):
    pass


class AlertRule(models.Model):
    """A static threshold on a rollup metric, e.g. "daily cost of feature search > $200" or "p95
    latency of gpt-4o > 2000 ms for 3 hours". Fires once per breach, resolves when the metric returns.

    Units: cost and cost per 1K tokens in USD; latency in milliseconds; error rate as a fraction
    (0.05 = 5 %); tokens, requests and unpriced records as counts. Hourly rules look at complete
    hours; daily rules at the current day of the tenant's calendar so far.
    """

    class Metric(models.TextChoices):
        COST = "cost", "Cost (USD)"
        TOKENS = "tokens", "Tokens"
        REQUESTS = "requests", "Requests"
        ERROR_RATE = "error_rate", "Error rate (fraction)"
        AVERAGE_LATENCY = "average_latency", "Average latency (ms)"
        P95_LATENCY = "p95_latency", "p95 latency (ms)"
        COST_PER_1K_TOKENS = "cost_per_1k_tokens", "Cost per 1K tokens (USD)"
        UNPRICED_REQUESTS = "unpriced_requests", "Unpriced records"

    class Window(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    class Comparison(models.TextChoices):
        ABOVE = "above", "Above"
        BELOW = "below", "Below"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=200)
    metric = models.CharField(max_length=20, choices=Metric.choices)
    window = models.CharField(max_length=4, choices=Window.choices, default=Window.HOUR)
    comparison = models.CharField(max_length=5, choices=Comparison.choices, default=Comparison.ABOVE)
    threshold = models.DecimalField(max_digits=24, decimal_places=9)
    consecutive_windows = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Breaching windows in a row before it fires."
    )
    feature = models.CharField(max_length=200, blank=True, help_text="Only this feature tag.")
    model = models.CharField(max_length=200, blank=True, help_text="Only this model (normalised).")
    include_descendants = models.BooleanField(default=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AlertRuleQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "name"]

    def __str__(self) -> str:
        return f"{self.tenant}: {self.name}"


class AlertRuleEventQuerySet(TenantScopedQuerySet):
    tenant_field = "rule__tenant_id"


class AlertRuleEvent(models.Model):
    """One breach of a rule, from the window it fired in until the metric returned."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    fired_at = models.DateTimeField()
    window_start = models.DateTimeField(help_text="Start of the first breaching window.")
    value = models.DecimalField(max_digits=30, decimal_places=9, help_text="The metric when it fired.")
    last_value = models.DecimalField(max_digits=30, decimal_places=9)
    peak_value = models.DecimalField(max_digits=30, decimal_places=9)
    resolved_at = models.DateTimeField(null=True, blank=True)

    objects = AlertRuleEventQuerySet.as_manager()

    class Meta:
        ordering = ["-fired_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule"], condition=Q(resolved_at__isnull=True), name="alert_rule_one_firing_event"
            )
        ]

    def __str__(self) -> str:
        state = "firing" if self.resolved_at is None else "resolved"
        return f"{self.rule} {state} since {self.fired_at:%Y-%m-%d %H:%M}"


class ForecastQuerySet(TenantScopedQuerySet):
    pass


class Forecast(models.Model):
    """Spend at the end of a period (a calendar month of the tenant, or a budget's period), with an
    80 % prediction interval, as last computed. One row per (tenant, month) or (budget, period)."""

    class Kind(models.TextChoices):
        MONTH = "month", "Calendar month"
        BUDGET = "budget", "Budget period"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="forecasts")
    budget = models.ForeignKey(
        Budget, null=True, blank=True, on_delete=models.CASCADE, related_name="forecasts"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    period_key = models.CharField(max_length=40)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    computed_at = models.DateTimeField()
    actual_nanos = models.BigIntegerField(help_text="Spend in the period up to computed_at.")
    forecast_nanos = models.BigIntegerField(help_text="Expected spend over the whole period.")
    lower_nanos = models.BigIntegerField(help_text="10th percentile of the period's spend.")
    upper_nanos = models.BigIntegerField(help_text="90th percentile of the period's spend.")
    method = models.CharField(max_length=20)
    history_days = models.PositiveIntegerField()

    objects = ForecastQuerySet.as_manager()

    class Meta:
        ordering = ["tenant__slug", "-period_start", "kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period_key"],
                condition=Q(kind="month"),
                name="forecast_one_per_tenant_month",
            ),
            models.UniqueConstraint(
                fields=["budget", "period_key"],
                condition=Q(kind="budget"),
                name="forecast_one_per_budget_period",
            ),
            models.CheckConstraint(
                condition=Q(kind="month", budget__isnull=True) | Q(kind="budget", budget__isnull=False),
                name="forecast_budget_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant} {self.kind} {self.period_key}"
