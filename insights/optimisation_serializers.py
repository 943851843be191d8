"""Serializers of the cost optimisation API: query parameters, and the reports (dicts of the
optimisation selectors, money in nanos shown as decimal USD strings)."""

from decimal import Decimal

from rest_framework import serializers

from chargeback.costs_api import CostRangeParametersSerializer
from chargeback.serializers import NanosAsUsdField


class OptimisationParametersSerializer(CostRangeParametersSerializer):
    feature = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Only this feature tag (present but empty: untagged usage); absent: every feature.",
    )


class CachingParametersSerializer(OptimisationParametersSerializer):
    cache_ttl_seconds = serializers.IntegerField(
        required=False,
        min_value=1,
        allow_null=True,
        default=None,
        help_text="Lifetime of an exact-match cache entry; absent: entries live for the whole period.",
    )
    target_cached_share = serializers.DecimalField(
        max_digits=5,
        decimal_places=4,
        min_value=Decimal(0),
        max_value=Decimal(1),
        required=False,
        default=Decimal("0.5"),
        help_text="Provider prompt caching: the share of input read from the cache to price as reachable.",
    )


class WhatIfParametersSerializer(OptimisationParametersSerializer):
    model = serializers.CharField(help_text="The model to re-price on, e.g. gpt-4o-mini.")
    provider = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Its provider; default: genai-prices' one."
    )
    source_model = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Only re-price the calls of this model."
    )


class ScopeSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    time_zone = serializers.CharField()
    feature = serializers.CharField(allow_null=True)
    observed_days = serializers.FloatField(help_text="The part of [start, end) before now, in days.")


class CostliestRowSerializer(serializers.Serializer):
    feature = serializers.CharField(allow_blank=True)
    model = serializers.CharField()
    prompt_template = serializers.CharField(allow_blank=True)
    requests = serializers.IntegerField()
    unpriced_requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    list_cost_usd = NanosAsUsdField(source="list_cost_nanos")
    cost_per_request_usd = NanosAsUsdField(source="cost_per_request_nanos", help_text="Per priced request.")
    share_of_total = serializers.FloatField(allow_null=True)
    previous_list_cost_usd = NanosAsUsdField(source="previous_list_cost_nanos")
    change_percent = serializers.FloatField(
        allow_null=True, help_text="Against the period of the same length before; null when that had none."
    )


class CostliestReportSerializer(serializers.Serializer):
    scope = ScopeSerializer()
    total_list_cost_usd = NanosAsUsdField(source="total_list_cost_nanos")
    previous_total_list_cost_usd = NanosAsUsdField(source="previous_total_list_cost_nanos")
    rows = CostliestRowSerializer(many=True)


class RepeatedPromptSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    model = serializers.CharField()
    prompt_hash = serializers.CharField()
    feature = serializers.CharField(allow_blank=True)
    requests = serializers.IntegerField()
    hits = serializers.IntegerField(help_text="Calls an exact-match cache would have answered.")
    list_cost_usd = NanosAsUsdField(source="list_cost_nanos")
    saved_usd = NanosAsUsdField(source="saved_nanos")


class CacheFeatureSerializer(serializers.Serializer):
    feature = serializers.CharField(allow_blank=True)
    model = serializers.CharField()
    prompts = serializers.IntegerField()
    requests = serializers.IntegerField()
    hits = serializers.IntegerField()
    list_cost_usd = NanosAsUsdField(source="list_cost_nanos")
    saved_usd = NanosAsUsdField(source="saved_nanos")
    monthly_saved_usd = NanosAsUsdField(source="monthly_saved_nanos")


class ExactCacheSerializer(serializers.Serializer):
    ttl_seconds = serializers.IntegerField(allow_null=True)
    requests_with_prompt_hash = serializers.IntegerField()
    list_cost_with_prompt_hash_usd = NanosAsUsdField(source="list_cost_with_prompt_hash_nanos")
    repeated_prompts = serializers.IntegerField()
    repeated_requests = serializers.IntegerField()
    saved_usd = NanosAsUsdField(source="saved_nanos")
    monthly_saved_usd = NanosAsUsdField(source="monthly_saved_nanos")
    by_feature = CacheFeatureSerializer(many=True)
    prompts = RepeatedPromptSerializer(many=True)


class PromptCachingSerializer(serializers.Serializer):
    provider = serializers.CharField()
    model = serializers.CharField()
    feature = serializers.CharField(allow_blank=True)
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cached_share = serializers.FloatField(allow_null=True)
    target_cached_share = serializers.FloatField()
    extra_cached_tokens = serializers.IntegerField()
    input_price_per_mtok_usd = NanosAsUsdField(source="input_price_per_mtok_nanos")
    cache_read_price_per_mtok_usd = NanosAsUsdField(source="cache_read_price_per_mtok_nanos")
    saved_by_caching_usd = NanosAsUsdField(source="saved_by_caching_nanos")
    potential_savings_usd = NanosAsUsdField(source="potential_savings_nanos")
    monthly_potential_savings_usd = NanosAsUsdField(source="monthly_potential_savings_nanos")


class CachingReportSerializer(serializers.Serializer):
    scope = ScopeSerializer()
    exact_cache = ExactCacheSerializer()
    prompt_caching = PromptCachingSerializer(many=True)


class ModelStatisticsSerializer(serializers.Serializer):
    model = serializers.CharField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True)
    latency_average_ms = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)


class WhatIfModelSerializer(serializers.Serializer):
    model = serializers.CharField()
    requests = serializers.IntegerField()
    list_cost_usd = NanosAsUsdField(source="list_cost_nanos")
    repriced_cost_usd = NanosAsUsdField(source="repriced_cost_nanos")
    savings_usd = NanosAsUsdField(source="savings_nanos")
    monthly_savings_usd = NanosAsUsdField(source="monthly_savings_nanos")


class WhatIfTargetSerializer(serializers.Serializer):
    provider = serializers.CharField(allow_blank=True)
    model = serializers.CharField()
    used_in_scope = serializers.BooleanField()


class WhatIfReportSerializer(serializers.Serializer):
    scope = ScopeSerializer()
    target = WhatIfTargetSerializer()
    requests = serializers.IntegerField()
    unpriced_requests_skipped = serializers.IntegerField()
    list_cost_usd = NanosAsUsdField(source="list_cost_nanos")
    repriced_cost_usd = NanosAsUsdField(source="repriced_cost_nanos")
    savings_usd = NanosAsUsdField(source="savings_nanos", help_text="Negative: the other model costs more.")
    monthly_savings_usd = NanosAsUsdField(source="monthly_savings_nanos")
    by_model = WhatIfModelSerializer(many=True)
    model_statistics = ModelStatisticsSerializer(many=True)


class OpportunitySerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    kind = serializers.ChoiceField(
        choices=["exact_cache", "prompt_caching", "model_substitution", "routing_rollout"]
    )
    title = serializers.CharField()
    feature = serializers.CharField(allow_blank=True)
    model = serializers.CharField(allow_blank=True)
    alternative = serializers.CharField(allow_blank=True)
    period_savings_usd = NanosAsUsdField(source="period_savings_nanos")
    monthly_savings_usd = NanosAsUsdField(source="monthly_savings_nanos")
    evidence = serializers.DictField()


class SavingsReportSerializer(serializers.Serializer):
    scope = ScopeSerializer()
    opportunities = OpportunitySerializer(many=True)
    monthly_savings_usd_by_kind = serializers.SerializerMethodField()

    def get_monthly_savings_usd_by_kind(self, report) -> dict[str, str]:
        from chargeback import money

        return {
            kind: money.nanos_to_str(nanos) for kind, nanos in report["monthly_savings_nanos_by_kind"].items()
        }


class PolicyWindowSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    requests = serializers.IntegerField()
    list_cost_usd = NanosAsUsdField(source="list_cost_nanos")
    cost_per_request_usd = NanosAsUsdField(source="cost_per_request_nanos")


class PolicyBeforeAfterSerializer(serializers.Serializer):
    before = PolicyWindowSerializer()
    after = PolicyWindowSerializer()
    change_percent = serializers.FloatField(allow_null=True)


class ArmSerializer(serializers.Serializer):
    requests = serializers.IntegerField(help_text="Sample size.")
    priced_requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True)
    list_cost_usd = NanosAsUsdField(source="list_cost_nanos")
    cost_per_request_usd = NanosAsUsdField(source="cost_per_request_nanos")
    latency_average_ms = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)
    models = serializers.DictField(child=serializers.IntegerField(), help_text="Requests per model.")


class ArmDifferenceSerializer(serializers.Serializer):
    cost_per_request_usd = NanosAsUsdField(source="cost_per_request_nanos", help_text="Policy minus control.")
    cost_per_request_interval_usd = serializers.SerializerMethodField(
        help_text="Approximate 95 % interval (Welch); null with fewer than two priced calls per arm."
    )
    cost_difference_is_significant = serializers.BooleanField()
    error_rate = serializers.FloatField(allow_null=True)
    error_rate_interval = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    error_rate_difference_is_significant = serializers.BooleanField()

    def get_cost_per_request_interval_usd(self, difference) -> list[str] | None:
        from chargeback import money

        interval = difference["cost_per_request_interval_nanos"]
        return None if interval is None else [money.nanos_to_str(bound) for bound in interval]


class AdoptionSerializer(serializers.Serializer):
    period_savings_usd = NanosAsUsdField(source="period_savings_nanos")
    monthly_savings_usd = NanosAsUsdField(source="monthly_savings_nanos")


class AbTestSerializer(serializers.Serializer):
    policy = ArmSerializer()
    control = ArmSerializer()
    difference = ArmDifferenceSerializer()
    full_adoption = AdoptionSerializer(
        allow_null=True, help_text="The control arm's calls at the policy arm's cost per request."
    )


class PolicyRuleSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    position = serializers.IntegerField()
    description = serializers.CharField()


class PolicySummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    tenant = serializers.CharField()
    share = serializers.DecimalField(max_digits=5, decimal_places=4)
    split_tag = serializers.CharField(allow_blank=True)
    active_from = serializers.DateTimeField()
    is_active = serializers.BooleanField()
    rules = PolicyRuleSummarySerializer(many=True)


class RoutingPolicyReportSerializer(serializers.Serializer):
    policy = PolicySummarySerializer()
    before_after = PolicyBeforeAfterSerializer()
    ab_test = AbTestSerializer()
