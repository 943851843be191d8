"""statements_generate builds every draft of a month in one batch; it must give exactly the
statements and lines statement_generate gives one tenant at a time."""

import json
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from chargeback.models import SharedCostRule, Statement, StatementLine
from chargeback.services import (
    statement_finalize,
    statement_generate,
    statement_void,
    statements_generate,
    usage_records_ingest,
)
from tenants.models import Tenant
from tests.factories import PriceOverrideFactory, TenantFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def ingest(tenant, at, *, cost=None, model="in-house", provider="acme", **fields):
    record = {"event_id": f"{tenant}-{at.isoformat()}-{model}-{cost}", "timestamp": at.isoformat(),
              "tenant": tenant, "provider": provider, "model": model, "input_tokens": 1000,
              "output_tokens": 300, **({"cost_usd": cost} if cost is not None else {}), **fields}  # fmt: skip
    result = usage_records_ingest(items=[json.dumps(record).encode()], scope_tenant_ids=None, now=NOW)
    assert result.accepted == 1, result.errors


def snapshot(period_key):
    """Every live statement of the month and its lines, by tenant slug, without row ids."""
    statement_fields = [f.attname for f in Statement._meta.fields if f.name not in {"id", "pdf"}]
    line_fields = [f.attname for f in StatementLine._meta.fields if f.name not in {"id", "statement"}]
    statements = Statement.objects.filter(period_key=period_key).exclude(status=Statement.Status.VOID)
    return {
        statement.tenant.slug: (
            [getattr(statement, name) for name in statement_fields],
            list(statement.lines.order_by("position").values_list(*line_fields)),
        )
        for statement in statements.select_related("tenant")
    }


def one_by_one(period_key):
    """What generating each billable tenant in turn gives, rolled back afterwards."""
    with transaction.atomic():
        for tenant in Tenant.objects.filter(is_billable=True, is_active=True).order_by("slug"):
            statement_generate(tenant=tenant, period_key=period_key, now=NOW)
        expected = snapshot(period_key)
        transaction.set_rollback(True)
    return expected


def build_small_tree():
    """Zones with whole-hour and half-hour offsets, a billable organisation with a billable team and
    non-billable children, an inactive billable tenant (still carving out its subtree), markup and a
    negotiated price, a shared pool, unpriced usage, late usage for finalized months, a draft to be
    regenerated, a finalized month and a voided one to be replaced."""
    org = TenantFactory(slug="org", is_billable=True, time_zone="Europe/Berlin")
    TenantFactory(slug="org-project", parent=org)
    team = TenantFactory(slug="org-team", parent=org, is_billable=True, time_zone="America/New_York")
    TenantFactory(slug="org-team-project", parent=team)
    dormant = TenantFactory(slug="org-dormant", parent=org, is_billable=True, is_active=False)
    TenantFactory(slug="org-dormant-project", parent=dormant)
    india = TenantFactory(slug="india", kind="customer", is_billable=True, time_zone="Asia/Kolkata",
                          markup_percent=20)  # fmt: skip
    TenantFactory(slug="india-project", parent=india)
    done = TenantFactory(slug="done", is_billable=True)
    redo = TenantFactory(slug="redo", is_billable=True, time_zone="Asia/Tokyo")
    TenantFactory(slug="no-usage", is_billable=True, time_zone="Australia/Adelaide")
    pool = TenantFactory(slug="platform")
    TenantFactory(slug="platform-ci", parent=pool)
    rule = SharedCostRule.objects.create(
        name="Platform", pool=pool, method=SharedCostRule.Method.PROPORTIONAL
    )
    rule.targets.set([org, india, redo])
    # A pool inside a billable subtree: its usage reaches statements only as shared cost.
    evals = TenantFactory(slug="evals", parent=org, time_zone="Asia/Kolkata")
    SharedCostRule.objects.create(name="Evals", pool=evals, method=SharedCostRule.Method.OWNER, owner=team)
    PriceOverrideFactory(
        tenant=org, model="gpt-4o", input_per_mtok=2, cached_input_per_mtok=1, output_per_mtok=8
    )

    def at(*args):
        return datetime(*args, tzinfo=UTC)

    for slug, cost in [
        ("org", "1.10"),
        ("org-project", "2.21"),
        ("org-team", "3.32"),
        ("org-team-project", "0.43"),
        ("org-dormant-project", "5.54"),
        ("india-project", "0.65"),
        ("done", "7.76"),
        ("redo", "0.87"),
        ("platform", "9.98"),
        ("platform-ci", "1.09"),
        ("evals", "0.333"),
    ]:
        ingest(slug, at(2026, 10, 14, 12), cost=cost)
    for slug in ("org", "org-team-project", "india"):
        ingest(slug, at(2026, 10, 9, 8), model="gpt-4o", provider="openai", cached_input_tokens=400)
        ingest(
            slug, at(2026, 10, 9, 9), model="claude-sonnet-4-5", provider="anthropic", cache_write_tokens=200
        )
        ingest(slug, at(2026, 10, 9, 10), model="gpt-4o-mini", provider="openai", reasoning_tokens=0)
    ingest("org-team", at(2026, 10, 9, 11), model="mystery-model", provider="nobody")  # unpriced
    # Half-hour edges of the Kolkata month (18:30 UTC): in, out, in, out.
    ingest("india", at(2026, 9, 30, 18, 29, 59), cost="100")
    ingest("india", at(2026, 9, 30, 18, 30), cost="0.005")
    ingest("india", at(2026, 10, 31, 18, 29, 59), cost="0.015")
    ingest("india", at(2026, 10, 31, 18, 30), cost="200")
    ingest("evals", at(2026, 9, 30, 18, 45), cost="0.2")

    # August and September finalized for the organisation, with late usage for August twice.
    ingest("org", at(2026, 8, 10), cost="5")
    statement_finalize(statement_id=statement_generate(tenant=org, period_key="2026-08", now=NOW).pk, now=NOW)
    ingest("org-project", at(2026, 8, 20), cost="1.25")
    statement_finalize(statement_id=statement_generate(tenant=org, period_key="2026-09", now=NOW).pk, now=NOW)
    ingest("org", at(2026, 8, 21), cost="0.5")
    ingest("org-project", at(2026, 9, 21), cost="0.75")
    # October: finalized for one tenant, voided (to be replaced) for another, a stale draft for a third.
    statement_finalize(
        statement_id=statement_generate(tenant=done, period_key="2026-10", now=NOW).pk, now=NOW
    )
    voided = statement_finalize(
        statement_id=statement_generate(tenant=india, period_key="2026-10").pk, now=NOW
    )
    statement_void(statement_id=voided.pk, reason="wrong rate", now=NOW)
    statement_generate(tenant=redo, period_key="2026-10")
    ingest("redo", at(2026, 10, 20), cost="4")
    return {"org": org, "india": india, "voided": voided}


def test_the_batch_gives_exactly_the_statements_of_one_tenant_at_a_time():
    fixtures = build_small_tree()
    expected = one_by_one("2026-10")

    statements = statements_generate(period_key="2026-10", now=NOW)

    assert snapshot("2026-10") == expected
    assert [statement.tenant.slug for statement in statements] == ["done", "india", "no-usage", "org", "org-team",
                                                                   "redo"]  # fmt: skip
    # What the comparison covers is really there.
    by_slug = {statement.tenant.slug: statement for statement in statements}
    kinds = {slug: {line.kind for line in statement.lines.all()} for slug, statement in by_slug.items()}
    assert {"usage", "shared", "markup"} <= kinds["india"]
    assert {"usage", "shared", "adjustment"} <= kinds["org"]
    assert by_slug["done"].status == "finalized"
    assert by_slug["india"].replaces_id == fixtures["voided"].pk
    assert by_slug["india"].period_start == datetime(2026, 9, 30, 18, 30, tzinfo=UTC)
    adjustment = by_slug["org"].lines.get(kind="adjustment", adjustment_period_key="2026-08")
    assert adjustment.amount_cents == 50  # 1.25 was adjusted on September's statement already
    assert "org-dormant-project" not in {line.tenant_slug for line in StatementLine.objects.all()}

    # Regenerating the drafts in a batch (updates, not inserts) changes nothing either.
    ids = {slug: statement.pk for slug, statement in by_slug.items()}
    again = statements_generate(period_key="2026-10", now=NOW)
    assert {statement.tenant.slug: statement.pk for statement in again} == ids
    assert snapshot("2026-10") == expected


def test_the_batch_also_finalizes():
    build_small_tree()
    statements = statements_generate(period_key="2026-10", finalize=True)
    assert {statement.status for statement in statements} == {"finalized"}
    assert all(statement.number for statement in statements)


def test_the_batch_reads_do_not_grow_with_the_number_of_tenants():
    def queries(count):
        for index in range(count):
            TenantFactory(slug=f"t{count}-{index}", is_billable=True)
            ingest(f"t{count}-{index}", datetime(2026, 10, 5, tzinfo=UTC), cost="1")
        with CaptureQueriesContext(connection) as captured:
            statements_generate(period_key="2026-10", tenant_ids=list(
                Tenant.objects.filter(slug__startswith=f"t{count}-").values_list("id", flat=True)))  # fmt: skip
        return len(captured)

    assert queries(2) == queries(8)
