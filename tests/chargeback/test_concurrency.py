"""Eight processes ingest overlapping batches at once, with exact and conflicting resends: every
record is stored exactly once, and the ledger (records, costs, hourly rollups, budget counters) is
what one sequential pass over the stored records computes, to the nano."""

import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection  # noqa: F401  (read by the skip condition)
from django.db.models import Sum
from django.utils import timezone

from budgets.counters import counter_key, counters_client, counters_enabled, counters_read
from budgets.models import Budget
from budgets.periods import budget_period
from budgets.selectors import budget_spend
from chargeback.models import UsageRecord, UsageRollupHourly
from chargeback.services import usage_records_ingest, usage_rollups_rebuild
from tests.chargeback.helpers import rollup_snapshot
from tests.factories import BudgetFactory, PriceOverrideFactory, TenantFactory
from tests.private_servers import ROOT, service_env
from tests.worker import test_database_url as worker_database_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "connection.vendor != 'postgresql'",
        reason="concurrent writers need PostgreSQL: SQLite takes one writer at a time (IMMEDIATE transactions)",
    ),
]

PROCESSES = 8
BATCHES_PER_PROCESS = 8
UNIQUE_RECORDS = 2400
TENANTS = ("team-a", "team-b", "customer-c")
# (provider, model, reported cost): priced by genai-prices, by a negotiated override (team-a's
# parent), by the client's reported cost, and one without any price.
MODELS = [
    ("openai", "gpt-4o", None), ("openai", "gpt-4o-mini", None), ("anthropic", "claude-sonnet-4-5", None),
    ("google", "gemini-2.5-flash", None), ("acme", "in-house", "0.004321"), ("acme", "unknown-model", None),
]  # fmt: skip
FEATURES = ("search", "chat", "summarize", "")
# The fields a record's ingestion decides (all but ingested_at and the row id).
STORED_FIELDS = (
    "tenant_id", "event_id", "payload_hash", "occurred_at", "provider", "model", "model_id",
    "uncached_input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "cache_write_1h_tokens", "latency_ms", "status", "tags", "list_cost_nanos", "cost_nanos",
    "reported_cost_nanos", "pricing_source", "price_version", "source",
)  # fmt: skip


def _universe(rng: random.Random) -> list[dict[str, dict]]:
    """Per event: variant "a", and for about one event in eight a conflicting variant "b" (same
    event_id, other tokens and tags)."""
    now = timezone.now()
    universe = []
    for index in range(UNIQUE_RECORDS):
        provider, model, cost = rng.choice(MODELS)
        input_tokens = rng.randint(50, 40_000)
        output_tokens = rng.randint(1, 4_000)
        record = {
            "event_id": f"evt-{index:05d}",
            "timestamp": (now - timedelta(seconds=rng.randint(60, 36 * 3600))).isoformat(),
            "tenant": rng.choice(TENANTS),
            "provider": provider,
            "model": model,
            "input_tokens": input_tokens,
            "cached_input_tokens": rng.choice([0, 0, input_tokens // 3]),
            "output_tokens": output_tokens,
            "reasoning_tokens": rng.choice([0, 0, output_tokens // 4]),
            "latency_ms": rng.randint(80, 30_000),
            "status": "error" if rng.random() < 0.05 else "ok",
            "tags": {"feature": rng.choice(FEATURES), "customer": f"cust-{rng.randint(1, 9)}"},
        }
        if provider == "anthropic" and record["cached_input_tokens"] == 0:
            record["cache_write_tokens"] = input_tokens // 4
        if cost is not None:
            record["cost_usd"] = cost
        variants = {"a": record}
        if rng.random() < 0.125:
            variants["b"] = {
                **record,
                "output_tokens": output_tokens + 777,
                "tags": {**record["tags"], "variant": "b"},
            }
        universe.append(variants)
    return universe


def _sends(rng: random.Random, universe) -> list[list[list[tuple[int, str]]]]:
    """[process][batch] -> (event index, variant) sends. Every event is sent one to four times, each
    conflicting one in both variants; an event appears once per batch, except exact duplicates
    inside a batch for events without a conflicting variant."""
    slots = [[[] for _ in range(BATCHES_PER_PROCESS)] for _ in range(PROCESSES)]
    for index, variants in enumerate(universe):
        times = rng.choice([1, 1, 2, 2, 3, 4])
        labels = ["a"] * times if "b" not in variants else ["a"] * max(1, times - 1) + ["b"]
        used = set()
        for label in labels:
            while (slot := (rng.randrange(PROCESSES), rng.randrange(BATCHES_PER_PROCESS))) in used:
                pass
            used.add(slot)
            slots[slot[0]][slot[1]].append((index, label))
            if "b" not in variants and rng.random() < 0.03:
                slots[slot[0]][slot[1]].append((index, label))
    for batches in slots:
        for batch in batches:
            rng.shuffle(batch)
    return slots


def _stored_rows():
    return sorted(UsageRecord.objects.values_list(*STORED_FIELDS))


def _budget_periods(universe):
    """Every (budget, period) the records fall in."""
    periods = {}
    for budget in Budget.objects.select_related("tenant"):
        for variants in universe:
            occurred = datetime.fromisoformat(variants["a"]["timestamp"])
            period = budget_period(budget, occurred, budget.tenant.time_zone)
            periods[(budget.pk, period.key)] = (budget, period)
    return periods


def test_eight_processes_ingesting_overlapping_batches_store_each_record_once_and_the_sums_of_one_pass():
    org = TenantFactory(slug="org", kind="organization")
    TenantFactory(slug="team-a", parent=org)
    TenantFactory(slug="team-b", parent=org, markup_percent=12.5)
    TenantFactory(slug="customer-c", kind="customer")
    PriceOverrideFactory(tenant=org, model="gpt-4o-mini", input_per_mtok="0.12", output_per_mtok="0.48")
    BudgetFactory(tenant=org, amount_nanos=10**12)
    BudgetFactory(tenant=TenantFactory(slug="customer-c"), amount_nanos=10**12, model="gpt-4o")
    rng = random.Random(20261129)
    universe = _universe(rng)
    slots = _sends(rng, universe)
    periods = _budget_periods(universe)
    if counters_enabled():
        counters_client().delete(*(counter_key(budget_id, key) for budget_id, key in periods))

    with tempfile.TemporaryDirectory(prefix="chargeback-concurrency-") as folder:
        for number, batches in enumerate(slots):
            Path(folder, f"batches-{number}.json").write_text(
                json.dumps([[universe[index][label] for index, label in batch] for batch in batches])
            )
        run = subprocess.run(
            [sys.executable, "-m", "tests.chargeback.concurrent_ingest", folder],
            cwd=ROOT, env=service_env(DATABASE_URL=worker_database_url()), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        answers = [
            answer
            for number in range(PROCESSES)
            for answer in json.loads(Path(folder, f"answers-{number}.json").read_text())
        ]
    assert len(answers) == PROCESSES * BATCHES_PER_PROCESS

    # Exactly once: each event stored once, in one of the variants sent; the answers add up to it.
    stored_variant = {
        event_id: "b" if tags.get("variant") == "b" else "a"
        for event_id, tags in UsageRecord.objects.values_list("event_id", "tags")
    }
    assert sorted(stored_variant) == [variants["a"]["event_id"] for variants in universe]
    sent = [universe[index][label]["event_id"] + label for batches in slots for batch in batches
            for index, label in batch]  # fmt: skip
    winning = {event_id + label for event_id, label in stored_variant.items()}
    counts = Counter(sent)
    expected_duplicates = sum(count for item, count in counts.items() if item in winning) - len(winning)
    expected_conflicts = sum(count for item, count in counts.items() if item not in winning)
    totals = {
        name: sum(answer[name] for answer in answers)
        for name in ("accepted", "duplicates", "conflicts", "rejected")
    }
    assert totals == {"accepted": UNIQUE_RECORDS, "duplicates": expected_duplicates,
                      "conflicts": expected_conflicts, "rejected": 0}  # fmt: skip
    assert expected_conflicts > 0 and expected_duplicates > 0
    conflicted = sorted(error["event_id"] for answer in answers for error in answer["errors"])
    assert conflicted == sorted(item[:-1] for item, count in counts.items() if item not in winning
                                for _ in range(count))  # fmt: skip

    # The rollups the concurrent batches summed equal a rebuild from the raw records ...
    concurrent_rows, concurrent_rollups = _stored_rows(), rollup_snapshot()
    hours = UsageRollupHourly.objects.order_by("hour").values_list("hour", flat=True)
    usage_rollups_rebuild(start=hours.first(), end=hours.last() + timedelta(hours=1))
    assert rollup_snapshot() == concurrent_rollups

    # ... the budget counters they incremented equal the spend in the database ...
    if counters_enabled():
        keys = [counter_key(budget_id, key) for budget_id, key in periods]
        values, _ = counters_read(keys)
        assert [value or 0 for value in values] == [
            budget_spend(budget, period) for budget, period in periods.values()
        ]
        assert any(values)

    # ... and records, costs and rollups are what one sequential pass over the stored records makes.
    costs = UsageRecord.objects.aggregate(cost=Sum("cost_nanos"), list_cost=Sum("list_cost_nanos"))
    UsageRecord.objects.all().delete()
    UsageRollupHourly.objects.all().delete()
    sequential = usage_records_ingest(
        items=[
            json.dumps(variants[stored_variant[variants["a"]["event_id"]]]).encode() for variants in universe
        ],
        scope_tenant_ids=None,
    )
    assert (sequential.accepted, sequential.errors) == (UNIQUE_RECORDS, [])
    assert UsageRecord.objects.aggregate(cost=Sum("cost_nanos"), list_cost=Sum("list_cost_nanos")) == costs
    assert _stored_rows() == concurrent_rows
    assert rollup_snapshot() == concurrent_rollups
