from django.db import models
from django.db.models import Q

from tenants.models import Tenant
from tenants.scoping import TenantScopedQuerySet

# Upper bounds (ms) of the latency histogram kept in every hourly rollup; the last bucket is open.
LATENCY_BUCKET_BOUNDS_MS = (
    50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 20000, 30000, 60000,
)  # fmt: skip
LATENCY_BUCKET_COUNT = len(LATENCY_BUCKET_BOUNDS_MS) + 1
LATENCY_BUCKET_FIELDS = tuple(f"latency_bucket_{index:02d}" for index in range(LATENCY_BUCKET_COUNT))


class PricingSource(models.TextChoices):
    OVERRIDE = "override", "Price override"
    GENAI_PRICES = "genai-prices", "genai-prices"
    CLIENT_REPORTED = "client-reported", "Client-reported cost"
    UNPRICED = "unpriced", "Unpriced"


class UsageStatus(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"


class UsageSource(models.TextChoices):
    API = "api", "API"
    OTLP = "otlp", "OpenTelemetry"
    LITELLM = "litellm", "LiteLLM"
    IMPORT = "import", "Import"


class UsageRecordQuerySet(TenantScopedQuerySet):
    pass


class UsageRecord(models.Model):
    """One LLM call, priced once at ingestion. Token counts are disjoint buckets."""

    # No foreign key constraint in the database: its check locks the tenant row once per inserted
    # record, and concurrent batches of one tenant then contend on that row (multixacts). Ingestion
    # locks each batch's tenants once instead (usage_storage.usage_rows_store), and PROTECT keeps
    # a tenant with usage from being deleted.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name="usage_records", db_constraint=False
    )
    event_id = models.CharField(max_length=200)
    payload_hash = models.CharField(max_length=32)
    occurred_at = models.DateTimeField()
    ingested_at = models.DateTimeField()
    provider = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    # The normalised model id: genai-prices' id when it knows the model, else the normalised name.
    model_id = models.CharField(max_length=200)
    uncached_input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    # The part of cache_write_tokens written for one hour (Anthropic), priced apart.
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    # Whole output, reasoning included; `reasoning_tokens` is the part of it spent reasoning.
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    latency_ms = models.IntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=UsageStatus.choices, default=UsageStatus.OK)
    tags = models.JSONField(default=dict, blank=True)
    # Cost before the tenant's markup or discount, and after it (what is charged back).
    list_cost_nanos = models.BigIntegerField(null=True, blank=True)
    cost_nanos = models.BigIntegerField(null=True, blank=True)
    reported_cost_nanos = models.BigIntegerField(null=True, blank=True)
    pricing_source = models.CharField(max_length=20, choices=PricingSource.choices)
    price_version = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=10, choices=UsageSource.choices, default=UsageSource.API)
    # The client's digest of the prompt (e.g. a SHA-256 of the request), so that repeated prompts
    # (what an exact-match cache would have answered) can be found; null when none was sent.
    prompt_hash = models.CharField(max_length=128, null=True, blank=True)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "event_id"], name="usage_tenant_event_unique"),
        ]
        indexes = [
            models.Index(fields=["tenant", "occurred_at", "id"], name="usage_tenant_time_idx"),
            models.Index(fields=["occurred_at"], name="usage_time_idx"),
            models.Index(
                fields=["tenant", "occurred_at"],
                name="usage_unpriced_idx",
                condition=Q(pricing_source="unpriced"),
            ),
            # Partial: records without a prompt hash (most) cost the ingest path no index entry.
            models.Index(
                fields=["tenant", "prompt_hash", "occurred_at"],
                name="usage_prompt_hash_idx",
                condition=Q(prompt_hash__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.event_id}"

    @property
    def input_tokens(self) -> int:
        return self.uncached_input_tokens + self.cached_input_tokens + self.cache_write_tokens


class UsageRollupQuerySet(TenantScopedQuerySet):
    pass


class UsageRollupHourly(models.Model):
    """Sums of usage per tenant, UTC hour, provider, model, feature tag and status.

    Written in the same transaction as the records it sums; every dashboard, budget and statement
    reads these rows, never the raw records.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_rollups")
    hour = models.DateTimeField()
    provider = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    feature = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=UsageStatus.choices)
    requests = models.BigIntegerField(default=0)
    unpriced_requests = models.BigIntegerField(default=0)
    uncached_input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    list_cost_nanos = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    latency_count = models.BigIntegerField(default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    latency_bucket_00 = models.BigIntegerField(default=0)
    latency_bucket_01 = models.BigIntegerField(default=0)
    latency_bucket_02 = models.BigIntegerField(default=0)
    latency_bucket_03 = models.BigIntegerField(default=0)
    latency_bucket_04 = models.BigIntegerField(default=0)
    latency_bucket_05 = models.BigIntegerField(default=0)
    latency_bucket_06 = models.BigIntegerField(default=0)
    latency_bucket_07 = models.BigIntegerField(default=0)
    latency_bucket_08 = models.BigIntegerField(default=0)
    latency_bucket_09 = models.BigIntegerField(default=0)
    latency_bucket_10 = models.BigIntegerField(default=0)
    latency_bucket_11 = models.BigIntegerField(default=0)
    latency_bucket_12 = models.BigIntegerField(default=0)
    latency_bucket_13 = models.BigIntegerField(default=0)
    latency_bucket_14 = models.BigIntegerField(default=0)
    latency_bucket_15 = models.BigIntegerField(default=0)
    latency_bucket_16 = models.BigIntegerField(default=0)
    latency_bucket_17 = models.BigIntegerField(default=0)

    objects = UsageRollupQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "hour", "provider", "model", "feature", "status"], name="rollup_key_unique"
            ),
        ]
        indexes = [models.Index(fields=["hour"], name="rollup_hour_idx")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.hour:%Y-%m-%d %H}h {self.provider}/{self.model} {self.feature or '-'}"


class PriceOverride(models.Model):
    """Our own price for a model, beating genai-prices; per tenant (and its descendants) or global."""

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="price_overrides"
    )
    provider = models.CharField(max_length=100, blank=True, help_text="Empty: any provider.")
    model = models.CharField(
        max_length=200, help_text="Model name as normalised (lowercase, no provider/ prefix)."
    )
    valid_from = models.DateTimeField()
    valid_to = models.DateTimeField(null=True, blank=True, help_text="Exclusive; empty: open-ended.")
    input_per_mtok = models.DecimalField(max_digits=18, decimal_places=9)
    cached_input_per_mtok = models.DecimalField(
        max_digits=18, decimal_places=9, null=True, blank=True, help_text="Empty: the input price."
    )
    cache_write_per_mtok = models.DecimalField(
        max_digits=18, decimal_places=9, null=True, blank=True, help_text="Empty: the input price."
    )
    output_per_mtok = models.DecimalField(max_digits=18, decimal_places=9)
    reasoning_per_mtok = models.DecimalField(
        max_digits=18, decimal_places=9, null=True, blank=True, help_text="Empty: the output price."
    )
    per_request = models.DecimalField(max_digits=18, decimal_places=9, default=0)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-valid_from"]
        indexes = [models.Index(fields=["model", "valid_from"], name="override_model_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(valid_to__isnull=True) | Q(valid_to__gt=models.F("valid_from")),
                name="override_valid_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.valid_from:%Y-%m-%d}"


class RerateAudit(models.Model):
    """One explicit re-pricing of a tenant's records over a period, with the totals before and after."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="rerate_audits")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    records = models.BigIntegerField()
    cost_nanos_before = models.BigIntegerField()
    cost_nanos_after = models.BigIntegerField()
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"rerate {self.tenant_id} {self.period_start:%Y-%m-%d}..{self.period_end:%Y-%m-%d}"


class AllocationRule(models.Model):
    """Attributes usage to a billable tenant by tag at ingest (e.g. customer=acme -> tenant acme).

    Rules are tried in ascending precedence; the first whose scope contains the reporting tenant
    and whose tag matches decides. Usage no rule matches stays on the reporting tenant.
    """

    precedence = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    scope = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
        help_text="Only usage reported by this tenant or below it; empty: any tenant.",
    )  # fmt: skip
    tag_key = models.CharField(max_length=64)
    tag_value = models.CharField(max_length=256)
    target = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="allocation_rules")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["precedence", "id"]
        constraints = [
            models.UniqueConstraint(fields=["precedence"], name="allocation_rule_precedence_unique")
        ]

    def __str__(self) -> str:
        return f"{self.precedence}: {self.tag_key}={self.tag_value} -> {self.target}"


class SharedCostRule(models.Model):
    """Spreads the monthly cost of a shared pool tenant (e.g. untagged platform spend) over
    billable tenants: to one owner, evenly, or in proportion to each one's own usage."""

    class Method(models.TextChoices):
        OWNER = "owner", "All to one owner"
        EVEN = "even", "Evenly"
        PROPORTIONAL = "proportional", "Proportional to usage"

    name = models.CharField(max_length=200)
    pool = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="shared_cost_rule")
    method = models.CharField(max_length=20, choices=Method.choices)
    owner = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    targets = models.ManyToManyField(
        Tenant, blank=True, related_name="+", help_text="For even and proportional."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(method="owner") | Q(owner__isnull=False), name="shared_owner_required"
            )
        ]

    def __str__(self) -> str:
        return self.name


class StatementQuerySet(TenantScopedQuerySet):
    pass


class Statement(models.Model):
    """One billable tenant's chargeback statement for one calendar month of its time zone."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        FINALIZED = "finalized", "Finalized"
        VOID = "void", "Void"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="statements")
    period_key = models.CharField(max_length=7)  # YYYY-MM in the tenant's zone
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    time_zone = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    number = models.CharField(max_length=32, null=True, blank=True, unique=True)
    currency = models.CharField(max_length=3, default="USD")
    total_cents = models.BigIntegerField(default=0)
    # Exact usage cost of the period when (re)generated: late usage is measured against it.
    usage_cost_nanos = models.BigIntegerField(default=0)
    previous_total_cents = models.BigIntegerField(null=True, blank=True)
    # Frozen at finalization, so that renaming a tenant never changes an issued document.
    tenant_name = models.CharField(max_length=200, blank=True)
    billing_email = models.EmailField(blank=True)
    issuer_name = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    generated_at = models.DateTimeField()
    finalized_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.CharField(max_length=500, blank=True)
    replaces = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    pdf = models.BinaryField(null=True, blank=True, editable=False)
    pdf_sha256 = models.CharField(max_length=64, blank=True)

    objects = StatementQuerySet.as_manager()

    class Meta:
        ordering = ["-period_start", "tenant__slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "period_key"],
                condition=~Q(status="void"),
                name="statement_one_live_per_month",
            ),
            models.CheckConstraint(
                condition=Q(status="draft", number__isnull=True) | ~Q(status="draft"),
                name="statement_draft_unnumbered",
            ),
        ]
        indexes = [models.Index(fields=["period_key", "status"], name="statement_period_idx")]

    def __str__(self) -> str:
        return self.number or f"draft {self.tenant_id} {self.period_key}"


class StatementLineQuerySet(TenantScopedQuerySet):
    tenant_field = "statement__tenant_id"


class StatementLine(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage", "Usage"
        PRICE_DIFFERENCE = "price_difference", "Tier and dated-price difference"
        SHARED = "shared", "Shared cost"
        MARKUP = "markup", "Markup or discount"
        ADJUSTMENT = "adjustment", "Adjustment for an earlier month"

    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    description = models.CharField(max_length=500)
    tenant_slug = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200, blank=True)
    token_type = models.CharField(max_length=30, blank=True)
    quantity = models.BigIntegerField(default=0)
    unit = models.CharField(max_length=30, blank=True)
    # USD per unit_scale units (e.g. per 1M tokens), as a decimal string; empty when not priced per unit.
    unit_price = models.CharField(max_length=40, blank=True)
    unit_scale = models.BigIntegerField(default=1)
    amount_nanos = models.BigIntegerField(default=0)  # exact
    amount_cents = models.BigIntegerField(default=0)  # rounded; the statement total sums these
    requests = models.BigIntegerField(default=0)
    adjustment_period_key = models.CharField(max_length=7, blank=True)

    objects = StatementLineQuerySet.as_manager()

    class Meta:
        ordering = ["statement", "position"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "position"], name="statement_line_position")
        ]

    def __str__(self) -> str:
        return f"{self.statement} #{self.position} {self.description}"


class StatementNumberSeries(models.Model):
    """The next number of a gapless series, taken under a row lock at finalization."""

    prefix = models.CharField(max_length=20, unique=True)
    next_value = models.PositiveBigIntegerField(default=1)

    def __str__(self) -> str:
        return f"{self.prefix} next {self.next_value}"
