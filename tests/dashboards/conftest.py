"""A small organisation with usage over the last days, a staff user and a member of one team."""

import random
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from chargeback.services import usage_records_ingest
from tenants.models import TenantMembership
from tests.factories import TenantFactory

PASSWORD = "correct horse battery staple"
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("acme", "in-house"),
]
FEATURES = ["search", "chat", "summary"]
TEMPLATES = ["answer-v1", "answer-v2"]


def usage_items(
    count: int, *, tenants: list[str], days: int = 10, seed: int = 7, prefix: str = "e"
) -> list[dict]:
    """`count` records spread over the last `days` days (whole hours before now), deterministic."""
    rng = random.Random(seed)
    end = timezone.now().replace(minute=0, second=0, microsecond=0)
    items = []
    for index in range(count):
        provider, model = rng.choice(MODELS)
        input_tokens = rng.randint(100, 20_000)
        items.append(
            {
                "event_id": f"{prefix}{index}",
                "timestamp": (end - timedelta(minutes=rng.randint(1, days * 24 * 60))).isoformat(),
                "tenant": rng.choice(tenants),
                "provider": provider,
                "model": model,
                "input_tokens": input_tokens,
                "cached_input_tokens": rng.randint(0, input_tokens // 2),
                "output_tokens": rng.randint(10, 2000),
                "latency_ms": rng.randint(80, 9000),
                "status": "error" if rng.random() < 0.05 else "ok",
                "tags": {"feature": rng.choice(FEATURES), "prompt_template": rng.choice(TEMPLATES)},
            }
        )
    return items


@pytest.fixture
def organisation():
    """acme → (team-a → project-a1), team-b; and an unrelated organisation other-org."""
    acme = TenantFactory(slug="acme", name="Acme", kind="organization")
    team_a = TenantFactory(slug="team-a", name="Team A", parent=acme)
    project = TenantFactory(slug="project-a1", name="Project A1", parent=team_a, kind="project")
    team_b = TenantFactory(slug="team-b", name="Team B", parent=acme)
    other = TenantFactory(slug="other-org", name="Other Org", kind="organization")
    return {"acme": acme, "team-a": team_a, "project-a1": project, "team-b": team_b, "other-org": other}


@pytest.fixture
def usage(organisation):
    def ingest(count: int = 200, *, seed: int = 7, prefix: str = "e"):
        result = usage_records_ingest(
            items=usage_items(count, tenants=list(organisation), seed=seed, prefix=prefix),
            scope_tenant_ids=None,
        )
        assert result.accepted == count, result.errors[:3]
        return result

    return ingest


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("finops", password=PASSWORD, is_staff=True)


@pytest.fixture
def team_a_user(organisation):
    user = get_user_model().objects.create_user("alice", password=PASSWORD)
    TenantMembership.objects.create(user=user, tenant=organisation["team-a"])
    return user


@pytest.fixture
def staff_client(staff_user):
    # A client of its own, so that a test can be two people at once.
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def team_a_client(team_a_user):
    client = Client()
    client.force_login(team_a_user)
    return client
