"""Serializers for the usage API. Ingestion validates with msgspec (chargeback.usage_input); the
ingest serializer here documents the same record format in the OpenAPI schema."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chargeback import money
from chargeback.models import Statement, StatementLine, UsageRecord
from tenants.serializers import OptionalEmailField


class UsageRecordIngestSerializer(serializers.Serializer):
    event_id = serializers.CharField(max_length=200, help_text="Client idempotency key, unique per tenant.")
    timestamp = serializers.DateTimeField(help_text="RFC 3339 with a zone offset.")
    tenant = serializers.SlugField(required=False, help_text="Tenant slug; optional for a tenant-bound key.")
    provider = serializers.CharField(max_length=100)
    model = serializers.CharField(max_length=200)
    input_tokens = serializers.IntegerField(
        min_value=0, required=False, help_text="Whole input, cache included."
    )
    output_tokens = serializers.IntegerField(
        min_value=0, required=False, help_text="Whole output, reasoning included."
    )
    cached_input_tokens = serializers.IntegerField(
        min_value=0, required=False, help_text="Cache reads (part of input)."
    )
    cache_write_tokens = serializers.IntegerField(
        min_value=0, required=False, help_text="Cache writes (part of input)."
    )
    cache_write_1h_tokens = serializers.IntegerField(
        min_value=0, required=False, help_text="One-hour cache writes (part of cache_write_tokens)."
    )
    reasoning_tokens = serializers.IntegerField(min_value=0, required=False, help_text="Part of output.")
    usage = serializers.DictField(
        required=False,
        help_text="A raw OpenAI, Anthropic or Gemini usage object, instead of the token fields.",
    )
    latency_ms = serializers.IntegerField(min_value=0, required=False)
    status = serializers.ChoiceField(choices=["ok", "error"], required=False, default="ok")
    tags = serializers.DictField(child=serializers.CharField(max_length=256), required=False)
    cost_usd = serializers.DecimalField(
        max_digits=18, decimal_places=9, required=False, help_text="Client-reported cost, used when unpriced."
    )
    prompt_hash = serializers.RegexField(
        r"^[0-9A-Za-z_:-]+$",
        max_length=128,
        required=False,
        help_text="Your digest of the prompt (e.g. the SHA-256 hex of the request), up to 128 of "
        "[0-9A-Za-z_:-]: equal hashes are repeated prompts, what an exact-match cache would answer.",
    )


class UsageRecordErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    event_id = serializers.CharField(allow_null=True)
    code = serializers.CharField()
    message = serializers.CharField()


class UsageIngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    conflicts = serializers.IntegerField()
    rejected = serializers.IntegerField()
    unpriced = serializers.IntegerField()
    errors = UsageRecordErrorSerializer(many=True)


class UsageIngestEnvelopeSerializer(serializers.Serializer):
    records = UsageRecordIngestSerializer(many=True)


@extend_schema_field({"type": "string", "format": "decimal", "nullable": True, "example": "0.004375000"})
class NanosAsUsdField(serializers.Field):
    """Integer nanos shown as a decimal USD string (never a float)."""

    def to_representation(self, value):
        return money.nanos_to_str(value)


class UsdAmountField(serializers.DecimalField):
    """A USD amount read and written as a decimal string, stored as integer nanos."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_digits", 18)
        kwargs.setdefault("decimal_places", 9)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        return money.usd_to_nanos(super().to_internal_value(data))

    def to_representation(self, value):
        return money.nanos_to_str(value)


class UsageRecordSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    timestamp = serializers.DateTimeField(source="occurred_at")
    input_tokens = serializers.IntegerField()
    cost_usd = NanosAsUsdField(source="cost_nanos", allow_null=True)
    list_cost_usd = NanosAsUsdField(source="list_cost_nanos", allow_null=True)
    reported_cost_usd = NanosAsUsdField(source="reported_cost_nanos", allow_null=True)

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "tenant",
            "event_id",
            "timestamp",
            "ingested_at",
            "provider",
            "model",
            "model_id",
            "input_tokens",
            "uncached_input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "cache_write_1h_tokens",
            "output_tokens",
            "reasoning_tokens",
            "latency_ms",
            "status",
            "tags",
            "cost_usd",
            "list_cost_usd",
            "reported_cost_usd",
            "pricing_source",
            "price_version",
            "source",
            "prompt_hash",
        ]
        read_only_fields = fields


@extend_schema_field({"type": "string", "format": "decimal", "nullable": True, "example": "12.34"})
class CentsAsUsdField(serializers.Field):
    """Integer cents shown as a decimal USD string with two places."""

    def to_representation(self, value):
        return None if value is None else money.cents_to_str(value)


class StatementLineSerializer(serializers.ModelSerializer):
    amount_usd = CentsAsUsdField(source="amount_cents")
    amount_exact_usd = NanosAsUsdField(source="amount_nanos")

    class Meta:
        model = StatementLine
        fields = [
            "position",
            "kind",
            "description",
            "tenant_slug",
            "provider",
            "model",
            "token_type",
            "quantity",
            "unit",
            "unit_price",
            "unit_scale",
            "requests",
            "amount_usd",
            "amount_exact_usd",
            "adjustment_period_key",
        ]
        read_only_fields = fields


class StatementSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    total_usd = CentsAsUsdField(source="total_cents")
    previous_total_usd = CentsAsUsdField(source="previous_total_cents", allow_null=True)
    replaces = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    billing_email = OptionalEmailField(read_only=True)

    class Meta:
        model = Statement
        fields = [
            "id",
            "tenant",
            "period_key",
            "period_start",
            "period_end",
            "time_zone",
            "status",
            "number",
            "currency",
            "total_usd",
            "previous_total_usd",
            "tenant_name",
            "billing_email",
            "issuer_name",
            "generated_at",
            "finalized_at",
            "voided_at",
            "void_reason",
            "replaces",
            "pdf_sha256",
            "notes",
        ]
        read_only_fields = fields


class StatementDetailSerializer(StatementSerializer):
    lines = StatementLineSerializer(many=True, read_only=True)

    class Meta(StatementSerializer.Meta):
        fields = [*StatementSerializer.Meta.fields, "lines"]
        read_only_fields = fields


class StatementVoidSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)
