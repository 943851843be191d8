import json
import threading
from datetime import UTC, datetime

import pytest
from django.db import DatabaseError, connection, transaction
from hypothesis import given
from hypothesis import strategies as st

from chargeback import money
from chargeback.models import AllocationRule, SharedCostRule, Statement, StatementLine, UsageRecord
from chargeback.services import (
    StatementError,
    shared_cost_allocation,
    statement_finalize,
    statement_generate,
    statement_void,
    statements_monthly_run,
    usage_records_ingest,
    usage_records_rerate,
)
from tests.factories import PriceOverrideFactory, TenantFactory

pytestmark = pytest.mark.django_db


def ingest(tenant, cost, at, event_id=None, **fields):
    """A record with an exact client-reported cost (an in-house model genai-prices does not know)."""
    record = {"event_id": event_id or f"{tenant}-{at.isoformat()}-{cost}-{len(fields)}", "timestamp": at.isoformat(),
              "tenant": tenant, "provider": "acme", "model": "in-house", "input_tokens": 10, "output_tokens": 5,
              "cost_usd": str(cost), **fields}  # fmt: skip
    result = usage_records_ingest(
        items=[json.dumps(record).encode()], scope_tenant_ids=None, now=max(at, _now())
    )
    assert result.accepted == 1, result.errors


def _now():
    return datetime(2026, 11, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "last_local_minute_utc", "first_local_minute_utc"),
    [
        ("Asia/Tokyo", datetime(2026, 9, 30, 14, 59, tzinfo=UTC), datetime(2026, 9, 30, 15, 0, tzinfo=UTC)),
        (
            "America/Los_Angeles",
            datetime(2026, 10, 1, 6, 59, tzinfo=UTC),
            datetime(2026, 10, 1, 7, 0, tzinfo=UTC),
        ),
    ],
)
def test_the_month_is_the_tenants_calendar_month(zone, last_local_minute_utc, first_local_minute_utc):
    tenant = TenantFactory(slug="billed", time_zone=zone, is_billable=True)
    ingest("billed", "1.00", last_local_minute_utc)  # 23:59 on 30 September, local
    ingest("billed", "2.00", first_local_minute_utc)  # 00:00 on 1 October, local
    ingest("billed", "4.00", datetime(2026, 10, 15, 12, tzinfo=UTC))
    september = statement_generate(tenant=tenant, period_key="2026-09")
    october = statement_generate(tenant=tenant, period_key="2026-10")
    assert september.total_cents == 100
    assert october.total_cents == 600
    assert october.period_start == first_local_minute_utc


def test_lines_round_to_cents_and_add_up_to_the_total():
    TenantFactory(slug="team", is_billable=True)
    for index in range(7):
        ingest("team", "0.003333333", datetime(2026, 10, 2, index, tzinfo=UTC), event_id=f"third-{index}")
    ingest("team", "1.005", datetime(2026, 10, 3, tzinfo=UTC), provider="other", model="second-model")
    statement = statement_generate(tenant=TenantFactory(slug="team"), period_key="2026-10")
    lines = list(statement.lines.all())
    assert statement.total_cents == sum(line.amount_cents for line in lines)
    exact = sum(line.amount_nanos for line in lines)
    assert exact == 7 * 3_333_333 + 1_005_000_000
    assert statement.total_cents == money.round_to_cents(exact) == 103


def test_lines_by_child_tenant_model_and_token_bucket_explain_the_total():
    org = TenantFactory(slug="org", is_billable=True)
    TenantFactory(slug="team-a", parent=org)
    PriceOverrideFactory(model="gpt-4o", input_per_mtok=2, cached_input_per_mtok=1, output_per_mtok=8)
    record = {"event_id": "gpt", "timestamp": "2026-10-05T10:00:00Z", "tenant": "team-a", "provider": "openai",
              "model": "gpt-4o", "input_tokens": 1_500_000, "cached_input_tokens": 500_000,
              "output_tokens": 250_000}  # fmt: skip
    usage_records_ingest(items=[json.dumps(record).encode()], scope_tenant_ids=None, now=_now())
    statement = statement_generate(tenant=org, period_key="2026-10")
    lines = {(line.tenant_slug, line.token_type): line for line in statement.lines.all()}
    assert lines["team-a", "uncached_input"].quantity == 1_000_000
    assert lines["team-a", "uncached_input"].unit_price == "2.000000000"
    assert lines["team-a", "uncached_input"].amount_cents == 200
    assert lines["team-a", "cached_input"].amount_cents == 50
    assert lines["team-a", "output"].amount_cents == 200
    assert statement.total_cents == 450


def test_markup_is_its_own_line():
    TenantFactory(slug="customer", is_billable=True, markup_percent=20)
    ingest("customer", "10", datetime(2026, 10, 5, tzinfo=UTC))
    statement = statement_generate(tenant=TenantFactory(slug="customer"), period_key="2026-10")
    markup = statement.lines.get(kind=StatementLine.Kind.MARKUP)
    assert (markup.amount_cents, markup.description) == (200, "Markup (20.0000%)")
    assert statement.total_cents == 1200


def test_billable_descendants_get_their_own_statement():
    org = TenantFactory(slug="org", is_billable=True)
    team = TenantFactory(slug="team", parent=org, is_billable=True)
    TenantFactory(slug="project", parent=team)
    ingest("org", "1", datetime(2026, 10, 5, tzinfo=UTC))
    ingest("project", "2", datetime(2026, 10, 5, tzinfo=UTC))
    assert statement_generate(tenant=org, period_key="2026-10").total_cents == 100
    assert statement_generate(tenant=team, period_key="2026-10").total_cents == 200


def test_allocation_rules_attribute_usage_by_tag_with_precedence():
    platform = TenantFactory(slug="platform")
    acme = TenantFactory(slug="acme", kind="customer", is_billable=True)
    search = TenantFactory(slug="search", is_billable=True)
    AllocationRule.objects.create(
        precedence=10, name="customers", tag_key="customer", tag_value="acme", target=acme
    )
    AllocationRule.objects.create(
        precedence=20, name="search", tag_key="feature", tag_value="search", target=search
    )
    at = datetime(2026, 10, 5, tzinfo=UTC)
    ingest(
        "platform", "1", at, tags={"customer": "acme", "feature": "search"}
    )  # both match: precedence 10 wins
    ingest("platform", "2", at, tags={"feature": "search"})
    ingest("platform", "4", at, tags={"feature": "other"})  # no rule: stays on the reporting tenant
    assert {record.tenant.slug: record.cost_nanos for record in UsageRecord.objects.select_related("tenant")} == {
        "acme": 1_000_000_000, "search": 2_000_000_000, "platform": 4_000_000_000,
    }  # fmt: skip
    assert statement_generate(tenant=acme, period_key="2026-10").total_cents == 100
    assert platform.pk


def test_a_scoped_allocation_rule_only_applies_below_its_scope():
    scoped = TenantFactory(slug="support")
    other = TenantFactory(slug="other")
    acme = TenantFactory(slug="acme", is_billable=True)
    AllocationRule.objects.create(precedence=1, name="x", tag_key="customer", tag_value="acme", target=acme,
                                  scope=scoped)  # fmt: skip
    ingest("support", "1", datetime(2026, 10, 5, tzinfo=UTC), tags={"customer": "acme"})
    ingest("other", "2", datetime(2026, 10, 5, tzinfo=UTC), tags={"customer": "acme"})
    assert UsageRecord.objects.get(cost_nanos=2 * 10**9).tenant == other


@pytest.mark.parametrize(
    ("method", "expected"),
    [("owner", {"a": 1000, "b": 0, "c": 0}), ("even", {"a": 334, "b": 333, "c": 333}),
     ("proportional", {"a": 500, "b": 300, "c": 200})],
)  # fmt: skip
def test_shared_cost_is_allocated_and_conserved_to_the_cent(method, expected):
    pool = TenantFactory(slug="shared-platform")
    targets = {slug: TenantFactory(slug=slug, is_billable=True) for slug in "abc"}
    rule = SharedCostRule.objects.create(name="Platform", pool=pool, method=method, owner=targets["a"])
    rule.targets.set(targets.values())
    at = datetime(2026, 10, 5, tzinfo=UTC)
    ingest("shared-platform", "10", at)
    for slug, cost in {"a": "5", "b": "3", "c": "2"}.items():
        ingest(slug, cost, at)
    allocation = shared_cost_allocation(rule, "2026-10")
    assert {slug: allocation.get(tenant.pk, 0) for slug, tenant in targets.items()} == expected
    totals = {
        slug: statement_generate(tenant=tenant, period_key="2026-10") for slug, tenant in targets.items()
    }
    own = {"a": 500, "b": 300, "c": 200}
    assert {slug: statement.total_cents - own[slug] for slug, statement in totals.items()} == expected
    assert sum(expected.values()) == 1000


@given(
    total=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(st.integers(0, 10**9), min_size=1, max_size=40),
)
def test_largest_remainder_split_conserves_the_pool(total, weights):
    shares = money.split_largest_remainder(total, weights)
    assert sum(shares) == total
    weight_sum = sum(weights) or len(weights)
    for share, weight in zip(shares, weights if sum(weights) else [1] * len(weights), strict=True):
        assert abs(share - total * weight / weight_sum) < 1 + 1e-9 * total


@given(st.lists(st.integers(min_value=-(10**15), max_value=10**15), max_size=50))
def test_rounding_lines_conserves_the_rounded_total(amounts):
    cents = money.cents_from_nanos_conserving(amounts)
    assert sum(cents) == money.round_to_cents(sum(amounts))
    for amount, cent in zip(amounts, cents, strict=True):
        assert amount // money.NANOS_PER_CENT <= cent <= amount // money.NANOS_PER_CENT + 1


def test_finalize_numbers_freezes_and_stores_the_pdf():
    tenant = TenantFactory(slug="team", name="Team Rocket", is_billable=True, billing_email="ap@example.com")
    ingest("team", "12.34", datetime(2026, 10, 5, tzinfo=UTC))
    draft = statement_generate(tenant=tenant, period_key="2026-10")
    assert draft.number is None
    finalized = statement_finalize(statement_id=draft.pk)
    assert finalized.number.startswith("CB-") and finalized.number.endswith("-000001")
    assert finalized.status == Statement.Status.FINALIZED
    assert len(finalized.pdf_sha256) == 64
    tenant.name = "Renamed"
    tenant.save()
    again = statement_generate(tenant=tenant, period_key="2026-10")
    assert again.pk == finalized.pk and again.tenant_name == "Team Rocket" and again.total_cents == 1234
    second = statement_finalize(statement_id=statement_generate(tenant=tenant, period_key="2026-09").pk)
    assert second.number.endswith("-000002")


def test_late_usage_becomes_an_adjustment_on_the_next_statement():
    tenant = TenantFactory(slug="team", is_billable=True)
    ingest("team", "5", datetime(2026, 9, 10, tzinfo=UTC))
    september = statement_finalize(statement_id=statement_generate(tenant=tenant, period_key="2026-09").pk)
    ingest("team", "1.50", datetime(2026, 9, 20, tzinfo=UTC), event_id="late")
    assert statement_generate(tenant=tenant, period_key="2026-09").total_cents == 500  # unchanged
    ingest("team", "2", datetime(2026, 10, 3, tzinfo=UTC))
    october = statement_generate(tenant=tenant, period_key="2026-10")
    adjustment = october.lines.get(kind=StatementLine.Kind.ADJUSTMENT)
    assert (adjustment.amount_cents, adjustment.adjustment_period_key) == (150, "2026-09")
    assert september.number in adjustment.description
    assert october.total_cents == 350
    october = statement_finalize(statement_id=october.pk)
    november = statement_generate(tenant=tenant, period_key="2026-11")
    assert not november.lines.filter(kind=StatementLine.Kind.ADJUSTMENT).exists()


def test_void_keeps_the_number_and_a_replacement_is_a_new_statement():
    tenant = TenantFactory(slug="team", is_billable=True)
    ingest("team", "5", datetime(2026, 9, 10, tzinfo=UTC))
    finalized = statement_finalize(statement_id=statement_generate(tenant=tenant, period_key="2026-09").pk)
    with pytest.raises(StatementError):
        statement_void(
            statement_id=statement_generate(tenant=tenant, period_key="2026-08").pk, reason="draft"
        )
    voided = statement_void(statement_id=finalized.pk, reason="wrong customer")
    assert (voided.status, voided.number, voided.pdf_sha256) == (
        "void",
        finalized.number,
        finalized.pdf_sha256,
    )
    replacement = statement_generate(tenant=tenant, period_key="2026-09")
    assert replacement.pk != finalized.pk and replacement.replaces_id == finalized.pk
    with pytest.raises(StatementError):
        statement_finalize(statement_id=voided.pk)


def test_rerating_a_finalized_month_is_refused():
    tenant = TenantFactory(slug="team", is_billable=True)
    ingest("team", "5", datetime(2026, 9, 10, tzinfo=UTC))
    statement_finalize(statement_id=statement_generate(tenant=tenant, period_key="2026-09").pk)
    with pytest.raises(StatementError):
        usage_records_rerate(tenant=tenant, start=datetime(2026, 9, 1, tzinfo=UTC),
                             end=datetime(2026, 10, 1, tzinfo=UTC), actor="test")  # fmt: skip


@pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="the trigger is PostgreSQL's; SQLite relies on the service"
)
def test_the_database_rejects_changes_to_finalized_statements():
    tenant = TenantFactory(slug="team", is_billable=True)
    ingest("team", "5", datetime(2026, 9, 10, tzinfo=UTC))
    statement = statement_finalize(statement_id=statement_generate(tenant=tenant, period_key="2026-09").pk)
    for attempt in (
        lambda: Statement.objects.filter(pk=statement.pk).update(total_cents=1),
        lambda: Statement.objects.filter(pk=statement.pk).delete(),
        lambda: StatementLine.objects.filter(statement=statement).update(amount_cents=0),
        lambda: StatementLine.objects.filter(statement=statement).delete(),
    ):
        with pytest.raises(DatabaseError), transaction.atomic():
            attempt()
    statement.refresh_from_db()
    assert statement.total_cents == 500
    assert statement_void(statement_id=statement.pk, reason="allowed").status == "void"


def test_the_monthly_run_drafts_then_finalizes_after_the_grace_period(settings):
    settings.STATEMENT_FINALIZE_GRACE_DAYS = 3
    tenant = TenantFactory(slug="team", is_billable=True, time_zone="Europe/Berlin")
    ingest("team", "5", datetime(2026, 10, 10, tzinfo=UTC))
    assert statements_monthly_run(now=datetime(2026, 10, 31, 23, 30, tzinfo=UTC)) == {
        "generated": 1,
        "finalized": 0,
    }
    statement = Statement.objects.get()
    assert statement.period_key == "2026-10"  # 23:30 UTC on 31 October is 00:30 on 1 November in Berlin
    assert statements_monthly_run(now=datetime(2026, 11, 2, tzinfo=UTC)) == {"generated": 0, "finalized": 0}
    assert statements_monthly_run(now=datetime(2026, 11, 4, tzinfo=UTC)) == {"generated": 0, "finalized": 1}
    assert statements_monthly_run(now=datetime(2026, 11, 5, tzinfo=UTC)) == {"generated": 0, "finalized": 0}
    assert Statement.objects.get().status == "finalized"
    assert tenant.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_finalization_gives_gapless_numbers():
    tenants = [TenantFactory(slug=f"t{index}", is_billable=True) for index in range(6)]
    for tenant in tenants:
        ingest(tenant.slug, "1", datetime(2026, 10, 5, tzinfo=UTC))
    drafts = [statement_generate(tenant=tenant, period_key="2026-10") for tenant in tenants]
    barrier = threading.Barrier(len(drafts))
    errors = []

    def finalize(statement_id):
        try:
            barrier.wait()
            statement_finalize(statement_id=statement_id)
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=finalize, args=[draft.pk]) for draft in drafts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    numbers = sorted(Statement.objects.values_list("number", flat=True))
    assert [int(number.rsplit("-", 1)[1]) for number in numbers] == list(range(1, 7))
