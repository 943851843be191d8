from datetime import UTC, datetime

import factory

from budgets.models import Budget, BudgetThreshold, NotificationChannel
from chargeback.models import AllocationRule, PriceOverride, Statement, StatementLine
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda number: f"tenant-{number}")
    name = factory.LazyAttribute(lambda tenant: tenant.slug.replace("-", " ").title())
    kind = Tenant.Kind.TEAM
    time_zone = "UTC"


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """Keys go through the service, so hashing is real; `create_with_secret` also returns the secret."""

    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda number: f"key {number}")
    tenant = None
    scopes = factory.LazyFunction(lambda: ["read"])

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        api_key, _ = api_key_create(name=kwargs["name"], scopes=kwargs["scopes"], tenant=kwargs["tenant"])
        return api_key

    @classmethod
    def create_with_secret(cls, **kwargs):
        return api_key_create(
            name=kwargs.get("name", "test key"),
            scopes=kwargs.get("scopes", ["read"]),
            tenant=kwargs.get("tenant"),
        )


class PriceOverrideFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PriceOverride

    model = "gpt-4o"
    provider = ""
    valid_from = datetime(2020, 1, 1, tzinfo=UTC)
    input_per_mtok = 1
    output_per_mtok = 2


class BudgetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Budget

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda number: f"budget {number}")
    amount_nanos = 100 * 10**9
    period = Budget.Period.MONTH


class BudgetThresholdFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BudgetThreshold

    budget = factory.SubFactory(BudgetFactory)
    percent = 80


class NotificationChannelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = NotificationChannel

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda number: f"channel {number}")
    kind = NotificationChannel.Kind.WEBHOOK
    target = "http://127.0.0.1:9/hook"
    secret = factory.Sequence(lambda number: f"whsec-test-{number}")


class StatementFactory(factory.django.DjangoModelFactory):
    """A draft statement for March 2026 (UTC) with no lines; set total_cents to match the lines."""

    class Meta:
        model = Statement

    tenant = factory.SubFactory(TenantFactory, is_billable=True)
    period_key = "2026-03"
    period_start = datetime(2026, 3, 1, tzinfo=UTC)
    period_end = datetime(2026, 4, 1, tzinfo=UTC)
    time_zone = "UTC"
    tenant_name = factory.LazyAttribute(lambda statement: statement.tenant.name)
    issuer_name = "chargeback"
    generated_at = datetime(2026, 4, 1, 1, 0, tzinfo=UTC)


class StatementLineFactory(factory.django.DjangoModelFactory):
    """A usage line of 1M gpt-4o input tokens at $2.50 per 1M tokens."""

    class Meta:
        model = StatementLine

    statement = factory.SubFactory(StatementFactory)
    position = factory.Sequence(lambda number: number + 1)
    kind = StatementLine.Kind.USAGE
    description = "openai gpt-4o input tokens"
    provider = "openai"
    model = "gpt-4o"
    token_type = "uncached_input"
    quantity = 1_000_000
    unit = "tokens"
    unit_price = "2.500000000"
    unit_scale = 1_000_000
    amount_nanos = 2_500_000_000
    amount_cents = 250


class AllocationRuleFactory(factory.django.DjangoModelFactory):
    """customer=<tenant slug> -> that tenant, for usage reported anywhere."""

    class Meta:
        model = AllocationRule

    precedence = factory.Sequence(lambda number: (number + 1) * 10)
    name = factory.Sequence(lambda number: f"rule {number}")
    tag_key = "customer"
    target = factory.SubFactory(TenantFactory, is_billable=True)
    tag_value = factory.LazyAttribute(lambda rule: rule.target.slug)
