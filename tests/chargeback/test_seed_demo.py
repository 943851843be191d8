from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count, Sum
from django.utils import timezone
from rest_framework.test import APIClient

from chargeback import demo
from chargeback.models import PricingSource, UsageRecord, UsageRollupHourly
from tenants.models import ApiKey, Tenant
from tenants.selectors import tenant_ancestor_ids
from tenants.services import api_key_revoke, api_key_split

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.fixture
def frozen_now(monkeypatch):
    """One 'now' for every run of a test, so two runs cover the same hours."""
    now = timezone.now()
    monkeypatch.setattr(demo, "_now", lambda: now)
    return now


def seed(days=2):
    out = StringIO()
    call_command("seed_demo", days=days, stdout=out, stderr=StringIO())
    return out.getvalue()


def snapshot():
    records = UsageRecord.objects.aggregate(
        n=Count("id"), cost=Sum("cost_nanos"), list_cost=Sum("list_cost_nanos"), tokens=Sum("output_tokens")
    )
    rollups = UsageRollupHourly.objects.aggregate(
        rows=Count("id"), requests=Sum("requests"), cost=Sum("cost_nanos"), unpriced=Sum("unpriced_requests")
    )
    return {
        "tenants": list(
            Tenant.objects.values_list("slug", "parent__slug", "markup_percent").order_by("slug")
        ),
        "records": records,
        "rollups": rollups,
        "keys": list(ApiKey.objects.values_list("prefix", flat=True)),
        "users": list(get_user_model().objects.values_list("username", "password")),
    }


def test_seed_demo_creates_tree_usage_rollups_admin_and_key(var_dir, frozen_now):
    output = seed()

    org = Tenant.objects.get(slug="acme-corp")
    assert org.kind == Tenant.Kind.ORGANIZATION and org.time_zone == "Europe/Berlin" and org.billing_email
    teams = set(org.children.values_list("slug", flat=True))
    assert {"search", "support-bot", "code-assist", "platform"} <= teams
    assert Tenant.objects.get(slug="globex").parent.slug == "support-bot"
    assert Tenant.objects.get(slug="globex").markup_percent == 15
    deepest = Tenant.objects.get(slug="search-rerank")
    assert len(tenant_ancestor_ids(deepest.pk)) >= 3

    records = UsageRecord.objects.all()
    count = records.count()
    assert 2_000 < count < 12_000
    window_start = frozen_now.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    assert not records.filter(occurred_at__lt=window_start).exists()
    assert not records.filter(occurred_at__gte=frozen_now).exists()
    assert set(records.values_list("source", flat=True).distinct()) == {"import"}
    assert records.filter(event_id__startswith="demo-").count() == count
    assert records.filter(status="error").exists()
    assert records.filter(cached_input_tokens__gt=0).exists()
    assert records.filter(cache_write_tokens__gt=0).exists()
    assert records.filter(reasoning_tokens__gt=0, model="o4-mini").exists()
    assert {"chat", "code-completion"} <= set(records.values_list("tags__feature", flat=True).distinct())
    assert records.filter(tags__customer="globex", tags__environment="production").exists()

    unpriced = records.filter(pricing_source=PricingSource.UNPRICED)
    assert unpriced.exists()
    assert set(unpriced.values_list("model", flat=True).distinct()) == {"acme-finetune-v2"}
    assert not unpriced.exclude(cost_nanos=None).exists()

    # The 15% markup on Globex shows in what is charged, not in the list cost.
    globex = records.filter(tenant__slug="globex").aggregate(
        cost=Sum("cost_nanos"), list=Sum("list_cost_nanos")
    )
    assert globex["cost"] > globex["list"] > 0

    # Rollups sum the records exactly.
    totals = snapshot()
    assert totals["rollups"]["requests"] == count
    assert totals["rollups"]["cost"] == totals["records"]["cost"]
    assert totals["rollups"]["unpriced"] == unpriced.count()

    password = (var_dir / "demo_admin_password").read_text().strip()
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    secret = (var_dir / "demo_api_key").read_text().strip()
    key = ApiKey.objects.get(prefix=api_key_split(secret)[0])
    assert key.is_global and sorted(key.scopes) == ["admin", "ingest", "read"]
    assert password in output and secret in output and "curl" in output

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.get("/api/v1/usage/", {"tenant": "globex"})
    assert response.status_code == 200, response.content


def test_seed_demo_twice_changes_nothing(var_dir, frozen_now):
    seed()
    before = snapshot()
    password = (var_dir / "demo_admin_password").read_text()
    secret = (var_dir / "demo_api_key").read_text()

    output = seed()

    assert snapshot() == before
    assert (var_dir / "demo_admin_password").read_text() == password
    assert (var_dir / "demo_api_key").read_text() == secret
    assert "0 new" in output and secret.strip() in output


def test_seed_demo_replaces_a_revoked_demo_key(var_dir, frozen_now):
    seed(days=1)
    old_secret = (var_dir / "demo_api_key").read_text().strip()
    api_key_revoke(api_key=ApiKey.objects.get(prefix=api_key_split(old_secret)[0]))

    seed(days=1)

    new_secret = (var_dir / "demo_api_key").read_text().strip()
    assert new_secret != old_secret
    assert ApiKey.objects.filter(prefix=api_key_split(new_secret)[0], is_active=True).exists()


def test_demo_generation_is_deterministic_with_a_spike():
    anchor = timezone.now().date()
    globex = next(workload for workload in demo.WORKLOADS if workload.key == "globex-chat")
    spike_day = anchor - timedelta(days=demo.SPIKE.days_before_anchor)
    same_weekday = spike_day - timedelta(days=7)

    first = demo.day_records(globex, spike_day, anchor, "America/New_York")
    assert first == demo.day_records(globex, spike_day, anchor, "America/New_York")
    assert len({record["event_id"] for record in first}) == len(first)
    normal = demo.day_records(globex, same_weekday, anchor, "America/New_York")
    assert len(first) > 2 * len(normal)


def test_the_demo_holds_opportunities_the_savings_report_finds(var_dir, frozen_now):
    from budgets.models import RoutingPolicy
    from insights.optimisation_selectors import OptimisationScope, routing_policy_report, savings_report

    output = seed(days=2)

    policy = RoutingPolicy.objects.get(tenant__slug="code-assist")
    assert policy.share < 1 and f"/api/v1/routing-policies/{policy.pk}/report" in output
    records = UsageRecord.objects.all()
    assert records.filter(prompt_hash__isnull=False).count() > 100
    assert (
        records.filter(tags__routing_arm="policy").exists()
        and records.filter(tags__routing_arm="control").exists()
    )
    end = frozen_now.replace(minute=0, second=0, microsecond=0)
    scope = OptimisationScope(
        tenant_ids=None, start=end - timedelta(days=2), end=end, time_zone="UTC", now=end
    )
    opportunities = savings_report(scope)["opportunities"]
    kinds = {entry["kind"] for entry in opportunities}
    assert {"exact_cache", "model_substitution", "routing_rollout", "prompt_caching"} <= kinds
    titles = {entry["title"] for entry in opportunities}
    assert (
        "Move chat from gpt-4o to gpt-4o-mini" in titles
        or "Move chat from claude-sonnet-4-5 to gpt-4o-mini" in titles
    )
    assert any(title.startswith("Cache repeated prompts of chat") for title in titles)
    report = routing_policy_report(policy, visible_tenant_ids=None, now=end)
    arms = report["ab_test"]
    assert arms["policy"]["models"].keys() == {"claude-3-5-haiku-latest"}
    assert arms["control"]["models"].keys() == {"claude-sonnet-4-5"}
    assert arms["policy"]["cost_per_request_nanos"] < arms["control"]["cost_per_request_nanos"]
