import re
from decimal import Decimal

from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict, ReturnDict

from budgets.models import Budget, BudgetThreshold, NotificationChannel, RoutingPolicy, RoutingRule
from chargeback import money
from chargeback.pricing import model_id_for, normalize_provider
from chargeback.serializers import NanosAsUsdField, UsdAmountField
from tenants.serializers import TenantSlugField


class BudgetThresholdSerializer(serializers.ModelSerializer):
    percent = serializers.DecimalField(max_digits=6, decimal_places=2, min_value=Decimal("0.01"))

    class Meta:
        model = BudgetThreshold
        fields = ["percent", "on_actual", "on_forecast"]


class BudgetSerializer(serializers.ModelSerializer):
    """A budget as the API shows and accepts it. `amount_usd` is a decimal string."""

    tenant = TenantSlugField()
    amount_usd = UsdAmountField(source="amount_nanos", min_value=Decimal("0.000000001"))
    thresholds = BudgetThresholdSerializer(many=True, required=False)

    class Meta:
        model = Budget
        fields = [
            "id",
            "tenant",
            "name",
            "amount_usd",
            "period",
            "week_start",
            "fixed_start",
            "fixed_end",
            "provider",
            "model",
            "tag_key",
            "tag_value",
            "action",
            "fallback_model",
            "fail_mode",
            "is_active",
            "thresholds",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]

    def validate(self, attrs):
        period = attrs.get("period", getattr(self.instance, "period", Budget.Period.MONTH))
        start = attrs.get("fixed_start", getattr(self.instance, "fixed_start", None))
        end = attrs.get("fixed_end", getattr(self.instance, "fixed_end", None))
        if period == Budget.Period.FIXED and (start is None or end is None or end <= start):
            raise serializers.ValidationError({"fixed_end": "A fixed period needs fixed_start < fixed_end."})
        if bool(attrs.get("tag_key")) != bool(attrs.get("tag_value")) and (
            "tag_key" in attrs or "tag_value" in attrs
        ):
            raise serializers.ValidationError({"tag_value": "tag_key and tag_value go together."})
        if attrs.get("provider"):
            attrs["provider"] = normalize_provider(attrs["provider"])
        if attrs.get("model"):
            attrs["model"] = model_id_for(attrs.get("provider", ""), attrs["model"])
        percents = [threshold["percent"] for threshold in attrs.get("thresholds", [])]
        if len(percents) != len(set(percents)):
            raise serializers.ValidationError({"thresholds": "Each threshold percent may appear once."})
        return attrs


class BudgetThresholdStatusSerializer(serializers.Serializer):
    percent = serializers.DecimalField(max_digits=6, decimal_places=2, source="threshold.percent")
    limit_usd = NanosAsUsdField(source="limit_nanos")
    on_actual = serializers.BooleanField(source="threshold.on_actual")
    on_forecast = serializers.BooleanField(source="threshold.on_forecast")
    alerted_actual = serializers.BooleanField()
    alerted_forecast = serializers.BooleanField()


class BudgetStatusSerializer(serializers.Serializer):
    budget_id = serializers.IntegerField(source="budget.id")
    period_key = serializers.CharField(source="period.key")
    period_start = serializers.DateTimeField(source="period.start")
    period_end = serializers.DateTimeField(source="period.end")
    amount_usd = NanosAsUsdField(source="budget.amount_nanos")
    spent_usd = NanosAsUsdField(source="spent_nanos")
    remaining_usd = NanosAsUsdField(source="remaining_nanos")
    forecast_usd = NanosAsUsdField(source="forecast_nanos", allow_null=True)
    percent_used = serializers.FloatField()
    thresholds = BudgetThresholdStatusSerializer(many=True)


# Builds the serializer's fields once per class and shares them between instances. DRF builds a
# serializer's fields anew for every instance (a deep copy of each declared field), which cost the
# allowance check more than its own work. The fields here are bound once to a template instance
# without context; validation and representation run exactly as before. Only for serializers whose
# fields keep no per-request state and read no context (no related fields, no querysets that depend
# on the request). No docstring: drf-spectacular would show it as the schema's description.
class _SharedFieldsMixin:
    @property
    def fields(self):
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:
            template = cls()
            shared = BindingDict(template)
            for name, field in template.get_fields().items():
                shared[name] = field
            cls._shared_fields = shared
        return shared


class AllowanceRequestSerializer(_SharedFieldsMixin, serializers.Serializer):
    tenant = serializers.SlugField(
        required=False, help_text="Required for a global key; defaults to the key's."
    )
    provider = serializers.CharField(required=False, allow_blank=True, default="")
    model = serializers.CharField(required=False, allow_blank=True, default="")
    tags = serializers.DictField(child=serializers.CharField(max_length=256), required=False, default=dict)
    estimated_cost_usd = serializers.DecimalField(
        max_digits=18, decimal_places=9, min_value=Decimal(0), required=False
    )
    estimated_input_tokens = serializers.IntegerField(min_value=0, max_value=10**9, required=False)
    estimated_output_tokens = serializers.IntegerField(min_value=0, max_value=10**9, required=False)


_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
_USD_PLAIN = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")  # within max_digits=18, decimal_places=9
_NANO = Decimal("1e-9")
_ABSENT = object()


def _plain_str(value) -> bool:
    """A str that CharField keeps as it is: nothing to strip, no NUL, no lone surrogate."""
    if type(value) is not str or value.strip() != value or "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def allowance_request_fast(data) -> dict | None:
    """`AllowanceRequestSerializer(data=data)`'s validated data for a well-formed JSON request of the
    usual shape, read directly (DRF's generic field loop costs the allowance check more than its
    own work); None for anything else, which the serializer then validates, so that every error is
    its own. Only accepts values the serializer keeps unchanged (tests compare the two)."""
    if type(data) is not dict:
        return None
    validated = {}
    tenant = data.get("tenant", _ABSENT)
    if tenant is not _ABSENT:
        if not (_plain_str(tenant) and _SLUG.fullmatch(tenant)):
            return None
        validated["tenant"] = tenant
    for name in ("provider", "model"):
        value = data.get(name, "")
        if not _plain_str(value):
            return None
        validated[name] = value
    tags = data.get("tags", _ABSENT)
    if tags is _ABSENT:
        validated["tags"] = {}
    else:
        if type(tags) is not dict:
            return None
        for key, value in tags.items():
            if type(key) is not str or not (_plain_str(value) and 0 < len(value) <= 256):
                return None
        validated["tags"] = dict(tags)
    cost = data.get("estimated_cost_usd", _ABSENT)
    if cost is not _ABSENT:
        if type(cost) is not str or not _USD_PLAIN.fullmatch(cost):
            return None
        validated["estimated_cost_usd"] = Decimal(cost).quantize(_NANO)
    for name in ("estimated_input_tokens", "estimated_output_tokens"):
        value = data.get(name, _ABSENT)
        if value is not _ABSENT:
            if type(value) is not int or not 0 <= value <= 10**9:
                return None
            validated[name] = value
    return validated


class AllowanceBudgetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    tenant = serializers.CharField(source="tenant.slug")
    action = serializers.CharField()


class AllowanceRoutingSerializer(serializers.Serializer):
    policy_id = serializers.IntegerField()
    policy_name = serializers.CharField()
    rule_id = serializers.IntegerField()
    rule_position = serializers.IntegerField()
    rule_description = serializers.CharField(help_text="The rule that chose the model, in words.")
    arm = serializers.ChoiceField(
        choices=["policy", "control"],
        help_text="policy: use `model`; control (an A/B policy's other arm): keep the model asked for.",
    )
    model = serializers.CharField()
    provider = serializers.CharField(allow_blank=True)
    tags = serializers.DictField(
        child=serializers.CharField(),
        help_text="Put these tags on the call's usage record: the policy's report compares the arms by them.",
    )


class AllowanceResponseSerializer(_SharedFieldsMixin, serializers.Serializer):
    allowed = serializers.BooleanField()
    reason = serializers.CharField()
    budget = AllowanceBudgetSerializer(allow_null=True)
    spent_usd = NanosAsUsdField(source="spent_nanos", allow_null=True)
    remaining_usd = NanosAsUsdField(source="remaining_nanos", allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)
    suggested_model = serializers.CharField(
        allow_blank=True,
        help_text="A denying budget's fallback model, else the routing policy's model (policy arm); empty: none.",
    )
    routing = AllowanceRoutingSerializer(
        allow_null=True, help_text="The routing policy and rule that matched the call, if any."
    )
    source = serializers.CharField()
    fresh = serializers.BooleanField()
    estimated_cost_usd = NanosAsUsdField(source="estimated_cost_nanos")


_PERIOD_END = serializers.DateTimeField()


def allowance_response_data(decision) -> ReturnDict:
    """`AllowanceResponseSerializer(decision).data`, written out: DRF's generic loop over the fields
    cost the allowance check more than its own work. Each value is what the serializer's field
    makes of it (tests compare the two); the serializer stays attached, as DRF attaches it."""
    budget = decision.budget
    if budget is not None:
        budget = {
            "id": int(budget.id),
            "name": str(budget.name),
            "tenant": str(budget.tenant.slug),
            "action": str(budget.action),
        }
    data = {
        "allowed": bool(decision.allowed),
        "reason": str(decision.reason),
        "budget": budget,
        "spent_usd": money.nanos_to_str(decision.spent_nanos),
        "remaining_usd": money.nanos_to_str(decision.remaining_nanos),
        "period_end": None
        if decision.period_end is None
        else _PERIOD_END.to_representation(decision.period_end),
        "suggested_model": str(decision.suggested_model),
        "routing": _routing_data(decision.routing),
        "source": str(decision.source),
        "fresh": bool(decision.fresh),
        "estimated_cost_usd": money.nanos_to_str(decision.estimated_cost_nanos),
    }
    return ReturnDict(data, serializer=AllowanceResponseSerializer(decision))


def _routing_data(routing) -> dict | None:
    if routing is None:
        return None
    return {
        "policy_id": int(routing.policy_id),
        "policy_name": str(routing.policy_name),
        "rule_id": int(routing.rule_id),
        "rule_position": int(routing.rule_position),
        "rule_description": str(routing.rule_description),
        "arm": str(routing.arm),
        "model": str(routing.model),
        "provider": str(routing.provider),
        "tags": {str(key): str(value) for key, value in routing.tags.items()},
    }


# --- routing policies -------------------------------------------------------------------------------


class RoutingRuleSerializer(serializers.ModelSerializer):
    min_budget_percent = serializers.DecimalField(
        max_digits=6, decimal_places=2, min_value=Decimal(0), required=False, allow_null=True
    )
    description = serializers.CharField(read_only=True)

    class Meta:
        model = RoutingRule
        fields = [
            "id",
            "position",
            "tag_key",
            "tag_value",
            "from_model",
            "min_budget_percent",
            "max_input_tokens",
            "target_model",
            "target_provider",
            "description",
        ]
        read_only_fields = ["id", "description"]
        extra_kwargs = {"position": {"required": False}}

    def validate(self, attrs):
        if bool(attrs.get("tag_key")) != bool(attrs.get("tag_value")):
            raise serializers.ValidationError({"tag_value": "tag_key and tag_value go together."})
        if not attrs.get("target_model"):
            # Also in a PATCH: rules given are whole rules (they replace the policy's rules).
            raise serializers.ValidationError({"target_model": "Each rule names the model to use."})
        provider = normalize_provider(attrs.get("target_provider", ""))
        attrs["target_provider"] = provider
        attrs["target_model"] = model_id_for(provider, attrs["target_model"])
        if attrs.get("from_model"):
            attrs["from_model"] = model_id_for("", attrs["from_model"])
        return attrs


class RoutingPolicySerializer(serializers.ModelSerializer):
    """A routing policy with its rules (tried in order; the first whose conditions all hold chooses)."""

    tenant = TenantSlugField()
    share = serializers.DecimalField(
        max_digits=5, decimal_places=4, min_value=Decimal(0), max_value=Decimal(1), required=False
    )
    rules = RoutingRuleSerializer(many=True)

    class Meta:
        model = RoutingPolicy
        fields = [
            "id",
            "tenant",
            "name",
            "precedence",
            "share",
            "split_tag",
            "active_from",
            "is_active",
            "rules",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]
        extra_kwargs = {"active_from": {"required": False}}

    def validate(self, attrs):
        share = attrs.get("share", getattr(self.instance, "share", Decimal(1)))
        split_tag = attrs.get("split_tag", getattr(self.instance, "split_tag", ""))
        if share != 1 and not split_tag:
            raise serializers.ValidationError(
                {"split_tag": "An A/B policy (share below 1) needs the tag whose value splits the traffic."}
            )
        if "rules" in attrs:
            if not attrs["rules"]:
                raise serializers.ValidationError({"rules": "A policy needs at least one rule."})
            positions = [rule["position"] for rule in attrs["rules"] if rule.get("position")]
            if len(positions) != len(set(positions)):
                raise serializers.ValidationError({"rules": "Each rule position may appear once."})
        return attrs


class NotificationChannelSerializer(serializers.ModelSerializer):
    """A notification channel. The webhook signing `secret` is write-only (`has_secret` says whether
    one is set); webhook and Slack targets must pass the target policy (code
    `notification_target_not_allowed`)."""

    tenant = TenantSlugField()
    secret = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=200)
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = NotificationChannel
        fields = ["id", "tenant", "name", "kind", "target", "secret", "has_secret", "is_active", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_has_secret(self, channel: NotificationChannel) -> bool:
        return bool(channel.secret)
