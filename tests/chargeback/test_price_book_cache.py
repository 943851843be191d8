"""PriceBook resolves each (tenant, provider, model) once per span of time in which its price cannot
change; a quote from a book that has seen other records must equal one from a fresh book."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from chargeback.pricing import PriceBook, TokenBuckets
from tests.factories import PriceOverrideFactory, TenantFactory

pytestmark = pytest.mark.django_db


def test_a_book_reused_across_price_boundaries_quotes_like_a_fresh_one():
    org = TenantFactory(slug="org", kind="organization")
    team = TenantFactory(slug="team", parent=org)
    other = TenantFactory(slug="other")
    chains = {team.pk: [team.pk, org.pk], other.pk: [other.pk]}
    noon = datetime(2026, 3, 2, 12, tzinfo=UTC)
    PriceOverrideFactory(tenant=org, model="gpt-4o", valid_from=noon, valid_to=noon + timedelta(hours=3))
    PriceOverrideFactory(model="gpt-4o", valid_from=noon + timedelta(hours=2), input_per_mtok=3)
    PriceOverrideFactory(tenant=other, model="gpt-4o-mini", valid_from=noon - timedelta(days=1))
    calls = [
        # openai o3 has a genai-prices price starting 2025-06-10 (UTC); deepseek-chat has off-peak hours.
        ("openai", "o3", datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC)),
        ("openai", "o3", datetime(2025, 6, 10, tzinfo=UTC)),
        ("deepseek", "deepseek-chat", datetime(2026, 3, 2, 0, 29, tzinfo=UTC)),
        ("deepseek", "deepseek-chat", datetime(2026, 3, 2, 0, 31, tzinfo=UTC)),
        ("deepseek", "deepseek-chat", datetime(2026, 3, 2, 9, tzinfo=UTC)),
        *(
            ("openai", "gpt-4o", noon + timedelta(minutes=minutes))
            for minutes in (-1, 0, 119, 120, 179, 180, 181)
        ),
        ("openai", "gpt-4o-mini", noon),
        ("x", "unknown-model", noon),
    ]
    rng = random.Random(5)
    shared = PriceBook(tenant_chains=chains)
    for _ in range(3):
        rng.shuffle(calls)
        for provider, model, at in calls:
            for tenant_id in (team.pk, other.pk):
                buckets = TokenBuckets(uncached_input=rng.randint(0, 50_000), output=rng.randint(0, 4_000))
                args = dict(
                    tenant_id=tenant_id, provider=provider, model=model, at=at, buckets=buckets,
                    reported_cost_nanos=None,
                )  # fmt: skip
                assert shared.quote(**args) == PriceBook(tenant_chains=chains).quote(**args), args
