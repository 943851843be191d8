"""Cost optimisation reports on constructed histories, each figure against a hand computation:
costliest request types, repeated-prompt savings (with and without a cache lifetime), provider
prompt caching at the real cache-read prices, re-priced totals against genai-prices' own
calculation, substitution candidates, a routing policy's before/after and A/B arms, and the
savings report's ranking."""

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import genai_prices
import pytest
from genai_prices import Usage

from budgets.models import RoutingPolicy
from budgets.routing_services import routing_policy_save
from chargeback.models import UsageRecord
from chargeback.services import usage_records_ingest
from insights import optimisation_selectors
from insights.optimisation_selectors import (
    OptimisationError,
    OptimisationScope,
    caching_report,
    costliest_request_types,
    exact_cache_savings,
    model_what_if,
    routing_policy_report,
    savings_report,
    substitution_opportunities,
)
from tenants.selectors import tenant_descendant_ids
from tests.factories import PriceOverrideFactory, TenantFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 1, tzinfo=UTC)
END = START + timedelta(days=10)
NOW = END + timedelta(days=1)  # the whole period is observed: monthly = 3 x the period
USD = 10**9


def nanos(amount) -> int:
    return int((Decimal(str(amount)) * USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def genai_nanos(model, provider, at, *, input_tokens, output_tokens=0, cached=0, cache_write=0, reasoning=0):
    """genai-prices' own total for one call, rounded once half-even to a nano."""
    usage = Usage(
        input_tokens=input_tokens,
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        output_tokens=output_tokens,
        output_reasoning_tokens=reasoning,
    )
    return nanos(
        genai_prices.calc_price(usage, model, provider_id=provider, genai_request_timestamp=at).total_price
    )


_counter = iter(range(10**6))


def call(tenant, at, *, cost=None, model="in-house", provider="acme", status="ok", latency=None, **fields):
    """One call: of an unpriced in-house model at a chosen client-reported cost, or of a real model
    priced by the price book (token fields given)."""
    tags = fields.pop("tags", {})
    item = {
        "event_id": f"e{next(_counter)}",
        "timestamp": at.isoformat(),
        "tenant": tenant,
        "provider": provider,
        "model": model,
        "input_tokens": fields.pop("input_tokens", 100),
        "output_tokens": fields.pop("output_tokens", 10),
        "status": status,
        "tags": tags,
        **fields,
    }
    if cost is not None:
        item["cost_usd"] = str(cost)
    if latency is not None:
        item["latency_ms"] = latency
    return item


def store(*items):
    result = usage_records_ingest(
        items=[json.dumps(item).encode() for item in items],
        scope_tenant_ids=None,
        now=NOW + timedelta(days=30),
    )
    assert result.rejected == 0 and result.conflicts == 0, result.errors


@pytest.fixture
def tree():
    org = TenantFactory(slug="org", kind="organization")
    team_a = TenantFactory(slug="team-a", parent=org)
    team_b = TenantFactory(slug="team-b", parent=org)
    other = TenantFactory(slug="other-org", kind="organization")
    return {"org": org, "team-a": team_a, "team-b": team_b, "other-org": other}


def scope_of(tenant, **changes):
    fields = {
        "tenant_ids": tenant_descendant_ids(tenant.pk),
        "start": START,
        "end": END,
        "time_zone": "UTC",
        "now": NOW,
    }
    return OptimisationScope(**{**fields, **changes})


def at(days, hours=0):
    return START + timedelta(days=days, hours=hours)


# --- scope ---------------------------------------------------------------------------------------------


def test_monthly_is_the_period_rate_over_thirty_days(tree):
    scope = scope_of(tree["org"])
    assert scope.observed == timedelta(days=10)
    assert scope.monthly(nanos("1.00")) == nanos("3.00")
    partial = scope_of(tree["org"], now=START + timedelta(days=7))  # 7 of 10 days observed
    assert partial.monthly(7) == 30
    assert scope_of(tree["org"], now=START).monthly(5) == 0


# --- costliest request types -----------------------------------------------------------------------------


def test_costliest_request_types_with_share_cost_per_request_and_trend(tree):
    chat_t1 = {"feature": "chat", "prompt_template": "t1"}
    store(
        call("team-a", at(1), cost="0.10", tags=chat_t1),
        call("team-a", at(2), cost="0.20", tags=chat_t1),
        call("team-b", at(3), cost="0.30", tags=chat_t1),
        call("team-a", at(4), cost="0.40", tags={"feature": "chat", "prompt_template": "t2"}),
        call("team-b", at(5), cost="0.50", model="other", tags={"feature": "search"}),
        call("team-b", at(6), cost="0.50", model="other", tags={"feature": "search"}),
        call("team-a", at(-2), cost="0.30", tags=chat_t1),  # the period before
        call("other-org", at(1), cost="9.00", tags=chat_t1),  # not in scope
    )
    report = costliest_request_types(scope_of(tree["org"]))
    assert report["total_list_cost_nanos"] == nanos("2.00")
    assert report["previous_total_list_cost_nanos"] == nanos("0.30")
    rows = [
        (row["feature"], row["model"], row["prompt_template"], row["requests"], row["list_cost_nanos"],
         row["cost_per_request_nanos"], row["share_of_total"], row["previous_list_cost_nanos"], row["change_percent"])
        for row in report["rows"]
    ]  # fmt: skip
    assert rows == [
        ("search", "other", "", 2, nanos("1.00"), nanos("0.50"), 0.5, 0, None),
        ("chat", "in-house", "t1", 3, nanos("0.60"), nanos("0.20"), 0.3, nanos("0.30"), 100.0),
        ("chat", "in-house", "t2", 1, nanos("0.40"), nanos("0.40"), 0.2, 0, None),
    ]
    assert report["rows"][1]["input_tokens"] == 300 and report["rows"][1]["output_tokens"] == 30


# --- caching ----------------------------------------------------------------------------------------------


def test_exact_cache_savings_by_hand():
    t0 = START
    calls = [(t0, "ok", 100), (t0 + timedelta(hours=1), "ok", 100), (t0 + timedelta(hours=2), "error", 50),
             (t0 + timedelta(hours=3), "ok", 100)]  # fmt: skip
    assert exact_cache_savings(calls) == (3, 250)
    # A 90-minute entry: hit at +1h; +2h is paid (and, failed, fills nothing); +3h is paid and refills.
    assert exact_cache_savings(calls, timedelta(minutes=90)) == (1, 100)
    # Failures before the first success are paid.
    assert exact_cache_savings([(t0, "error", 5), (t0, "ok", 7), (t0, "ok", 7)]) == (1, 7)
    assert exact_cache_savings([(t0, "ok", 7)]) == (0, 0)


def test_repeated_prompts_and_what_an_exact_match_cache_saves(tree):
    chat = {"feature": "chat"}
    store(
        # h1 on team-a: paid, hit, hit (an error), hit -> 0.25 saved
        call("team-a", at(1, 0), cost="0.10", prompt_hash="h1", tags=chat),
        call("team-a", at(1, 1), cost="0.10", prompt_hash="h1", tags=chat),
        call("team-a", at(1, 2), cost="0.05", prompt_hash="h1", status="error", tags=chat),
        call("team-a", at(1, 3), cost="0.10", prompt_hash="h1", tags=chat),
        # h2 on team-b: a failure first, then paid, then a hit -> 0.03 saved
        call("team-b", at(2, 0), cost="0.02", prompt_hash="h2", status="error", tags={"feature": "search"}),
        call("team-b", at(2, 1), cost="0.03", prompt_hash="h2", tags={"feature": "search"}),
        call("team-b", at(2, 2), cost="0.03", prompt_hash="h2", tags={"feature": "search"}),
        # Once only: h3; h1 once on team-b and once on another model: no cache hit across those.
        call("team-a", at(3), cost="0.50", prompt_hash="h3", tags=chat),
        call("team-b", at(3), cost="0.50", prompt_hash="h1", tags=chat),
        call("team-a", at(3), cost="0.50", prompt_hash="h1", model="other", tags=chat),
        call("team-a", at(4), cost="0.70", tags=chat),  # no hash
        call("other-org", at(1), cost="1.00", prompt_hash="h1", tags=chat),
        call("other-org", at(2), cost="1.00", prompt_hash="h1", tags=chat),
    )
    report = caching_report(scope_of(tree["org"]))
    exact = report["exact_cache"]
    assert exact["requests_with_prompt_hash"] == 10
    assert exact["list_cost_with_prompt_hash_nanos"] == nanos("1.93")
    assert (exact["repeated_prompts"], exact["repeated_requests"]) == (2, 4)
    assert exact["saved_nanos"] == nanos("0.28")
    assert exact["monthly_saved_nanos"] == nanos("0.84")
    assert [
        (p["tenant"], p["prompt_hash"], p["requests"], p["hits"], p["saved_nanos"]) for p in exact["prompts"]
    ] == [
        ("team-a", "h1", 4, 3, nanos("0.25")),
        ("team-b", "h2", 3, 1, nanos("0.03")),
    ]
    assert [(f["feature"], f["hits"], f["saved_nanos"]) for f in exact["by_feature"]] == [
        ("chat", 3, nanos("0.25")),
        ("search", 1, nanos("0.03")),
    ]
    short = caching_report(scope_of(tree["org"]), ttl=timedelta(minutes=90))["exact_cache"]
    assert short["saved_nanos"] == nanos("0.13")  # h1: 0.10, h2: 0.03
    # Only the caller's subtree counts.
    team_b = caching_report(scope_of(tree["team-b"]))["exact_cache"]
    assert [p["prompt_hash"] for p in team_b["prompts"]] == ["h2"] and team_b["saved_nanos"] == nanos("0.03")


def test_provider_prompt_caching_at_the_real_cache_read_prices(tree):
    sonnet = {"model": "claude-sonnet-4-5", "provider": "anthropic", "tags": {"feature": "review"}}
    store(
        call("team-a", at(1), input_tokens=10_000, cached_input_tokens=2_000, output_tokens=100, **sonnet),
        call("team-b", at(2), input_tokens=10_000, cache_write_tokens=1_000, output_tokens=100, **sonnet),
        # A model without a cache discount in the price book is no opportunity.
        call("team-a", at(3), cost="1.00", input_tokens=10_000),
    )
    # The base tier's prices per token, from genai-prices itself: input and cache read.
    input_price = Decimal(genai_nanos("claude-sonnet-4-5", "anthropic", at(1), input_tokens=10_000)) / 10_000
    read_price = (
        Decimal(genai_nanos("claude-sonnet-4-5", "anthropic", at(1), input_tokens=10_000, cached=10_000))
        / 10_000
    )
    assert (input_price, read_price) == (3_000, 300)  # nanos per token: $3 and $0.30 per MTok
    (row,) = caching_report(scope_of(tree["org"]))["prompt_caching"]
    assert (row["provider"], row["model"], row["feature"]) == ("anthropic", "claude-sonnet-4-5", "review")
    assert (row["input_tokens"], row["cached_input_tokens"], row["cache_write_tokens"]) == (
        20_000,
        2_000,
        1_000,
    )
    assert row["cached_share"] == 0.1
    # Half of 20,000 input tokens cached means 8,000 more at $2.70/MTok less.
    assert row["extra_cached_tokens"] == 8_000
    assert row["potential_savings_nanos"] == 8_000 * (input_price - read_price) == nanos("0.0216")
    assert row["saved_by_caching_nanos"] == 2_000 * (input_price - read_price) == nanos("0.0054")
    assert row["monthly_potential_savings_nanos"] == nanos("0.0648")
    assert (row["input_price_per_mtok_nanos"], row["cache_read_price_per_mtok_nanos"]) == (
        nanos(3),
        nanos("0.3"),
    )
    # All input cached would be 18,000 more tokens, but cache writes stay writes: 17,000 are uncached.
    everything = caching_report(scope_of(tree["org"]), target_cached_share=Decimal(1))["prompt_caching"][0]
    assert everything["extra_cached_tokens"] == 17_000
    assert everything["potential_savings_nanos"] == 17_000 * (input_price - read_price)


# --- re-pricing -------------------------------------------------------------------------------------------


CALLS_ON_GPT_4O = [
    {"input_tokens": 1_200, "output_tokens": 300},
    {"input_tokens": 5_000, "cached_input_tokens": 3_072, "output_tokens": 800},
    {"input_tokens": 40_000, "cached_input_tokens": 1_024, "output_tokens": 2_000},
    {"input_tokens": 7, "output_tokens": 1},
]


def test_what_if_totals_equal_genai_prices_own_calculation(tree):
    chat = {"feature": "chat"}
    items = [
        call("team-a", at(index, 3), model="gpt-4o", provider="openai", tags=chat, **tokens)
        for index, tokens in enumerate(CALLS_ON_GPT_4O)
    ]
    items.append(call("team-b", at(5), model="o4-mini", provider="openai", tags=chat, input_tokens=2_000,
                      output_tokens=1_500, reasoning_tokens=1_000))  # fmt: skip
    items.append(call("team-b", at(6), cost="0.25", tags=chat))  # priced by the client: re-priced too
    items.append(call("team-b", at(7), tags=chat))  # unpriced: left out, counted
    store(*items)

    def expected(model):
        total = 0
        for index, tokens in enumerate(CALLS_ON_GPT_4O):
            total += genai_nanos(model, "openai", at(index, 3), input_tokens=tokens["input_tokens"],
                                 output_tokens=tokens["output_tokens"], cached=tokens.get("cached_input_tokens", 0))  # fmt: skip
        return total

    report = model_what_if(scope_of(tree["org"]), model="gpt-4o-mini")
    mini_on_o4 = genai_nanos(
        "gpt-4o-mini", "openai", at(5), input_tokens=2_000, output_tokens=1_500, reasoning=1_000
    )
    mini_on_client = genai_nanos("gpt-4o-mini", "openai", at(6), input_tokens=100, output_tokens=10)
    current = expected("gpt-4o") + genai_nanos("o4-mini", "openai", at(5), input_tokens=2_000, output_tokens=1_500,
                                               reasoning=1_000) + nanos("0.25")  # fmt: skip
    assert report["target"] == {"provider": "openai", "model": "gpt-4o-mini", "used_in_scope": False}
    assert report["requests"] == 6 and report["unpriced_requests_skipped"] == 1
    assert report["list_cost_nanos"] == current
    assert report["repriced_cost_nanos"] == expected("gpt-4o-mini") + mini_on_o4 + mini_on_client
    assert report["savings_nanos"] == report["list_cost_nanos"] - report["repriced_cost_nanos"] > 0
    assert report["monthly_savings_nanos"] == 3 * report["savings_nanos"]
    gpt_4o = next(entry for entry in report["by_model"] if entry["model"] == "gpt-4o")
    assert (gpt_4o["requests"], gpt_4o["list_cost_nanos"], gpt_4o["repriced_cost_nanos"]) == (
        4,
        expected("gpt-4o"),
        expected("gpt-4o-mini"),
    )
    statistics = {entry["model"]: entry for entry in report["model_statistics"]}
    assert statistics["gpt-4o"]["requests"] == 4 and statistics["gpt-4o"]["error_rate"] == 0.0
    # One source model only, and the other direction costs more (negative savings).
    only = model_what_if(scope_of(tree["org"]), model="gpt-4o", source_model="o4-mini")
    assert only["requests"] == 1
    assert only["repriced_cost_nanos"] == genai_nanos("gpt-4o", "openai", at(5), input_tokens=2_000,
                                                      output_tokens=1_500, reasoning=1_000)  # fmt: skip


def test_what_if_uses_long_context_tiers_and_negotiated_prices(tree):
    store(
        call("team-a", at(1), model="gpt-4o", provider="openai", input_tokens=250_000, output_tokens=1_000),
        call("team-b", at(2), model="gpt-4o", provider="openai", input_tokens=1_000, output_tokens=500),
    )
    tiered = model_what_if(scope_of(tree["team-a"]), model="gemini-2.5-pro")
    assert tiered["target"]["provider"] == "google"
    assert tiered["repriced_cost_nanos"] == genai_nanos(
        "gemini-2.5-pro", "google", at(1), input_tokens=250_000, output_tokens=1_000
    )
    # team-b's negotiated rate for gpt-4o-mini: $0.10 input and $0.20 output per MTok.
    PriceOverrideFactory(tenant=tree["team-b"], model="gpt-4o-mini", input_per_mtok=Decimal("0.10"),
                         output_per_mtok=Decimal("0.20"))  # fmt: skip
    negotiated = model_what_if(scope_of(tree["team-b"]), model="gpt-4o-mini")
    assert negotiated["repriced_cost_nanos"] == 1_000 * 100 + 500 * 200  # nanos per token x tokens
    with pytest.raises(OptimisationError) as error:
        model_what_if(scope_of(tree["team-b"]), model="no-such-model-anywhere")
    assert error.value.code == "unpriced_model"
    with pytest.raises(OptimisationError):
        model_what_if(scope_of(tree["other-org"]), model="no-such-model-anywhere")


def test_substitution_candidates_are_cheaper_models_used_for_the_same_feature(tree):
    chat, search = {"feature": "chat"}, {"feature": "search"}
    store(
        call("team-a", at(1), model="gpt-4o", provider="openai", input_tokens=3_000, output_tokens=400, tags=chat),
        call("team-a", at(2), model="gpt-4o", provider="openai", input_tokens=9_000, output_tokens=100, tags=chat),
        call("team-b", at(3), model="gpt-4o-mini", provider="openai", input_tokens=1_000, output_tokens=100, tags=chat),
        call("team-b", at(4), model="claude-3-5-haiku-latest", provider="anthropic", input_tokens=2_000,
             output_tokens=300, tags=chat),
        call("team-b", at(4), cost="5.00", tags=chat),  # an unpriced in-house model: no candidate
        call("team-a", at(5), model="gpt-4o", provider="openai", input_tokens=3_000, output_tokens=400, tags=search),
    )  # fmt: skip
    found = substitution_opportunities(scope_of(tree["org"]))
    pairs = [(entry["feature"], entry["model"], entry["alternative"]) for entry in found]
    assert pairs == [("chat", "gpt-4o", "gpt-4o-mini"), ("chat", "claude-3-5-haiku-latest", "gpt-4o-mini")]
    gpt_4o = found[0]
    current = genai_nanos("gpt-4o", "openai", at(1), input_tokens=3_000, output_tokens=400) + genai_nanos(
        "gpt-4o", "openai", at(2), input_tokens=9_000, output_tokens=100
    )
    repriced = genai_nanos(
        "gpt-4o-mini", "openai", at(1), input_tokens=3_000, output_tokens=400
    ) + genai_nanos("gpt-4o-mini", "openai", at(2), input_tokens=9_000, output_tokens=100)
    assert (gpt_4o["requests"], gpt_4o["list_cost_nanos"], gpt_4o["repriced_cost_nanos"]) == (
        2,
        current,
        repriced,
    )
    assert gpt_4o["savings_nanos"] == current - repriced and gpt_4o["monthly_savings_nanos"] == 3 * (
        current - repriced
    )
    assert gpt_4o["model_statistics"]["requests"] == 2 and gpt_4o["alternative_statistics"]["requests"] == 1
    # Search has one model: nothing to compare it with. Team-b alone has no gpt-4o to move.
    assert [entry["model"] for entry in substitution_opportunities(scope_of(tree["team-b"]))] == [
        "claude-3-5-haiku-latest"
    ]


def test_what_if_on_a_model_with_off_peak_prices_prices_each_call_at_its_own_time(tree):
    """DeepSeek's prices change twice a day: such a target is priced call by call, each at its time."""
    store(
        call("team-a", at(1, 12), model="gpt-4o", provider="openai", input_tokens=2_000, output_tokens=500),
        call("team-a", at(1, 20), model="gpt-4o", provider="openai", input_tokens=2_000, output_tokens=500),
    )
    report = model_what_if(scope_of(tree["team-a"]), model="deepseek-chat", provider="deepseek")
    expected = [genai_nanos("deepseek-chat", "deepseek", at(1, hour), input_tokens=2_000, output_tokens=500)
                for hour in (12, 20)]  # fmt: skip
    assert expected[0] != expected[1]  # off-peak and peak
    assert report["repriced_cost_nanos"] == sum(expected)


def test_a_scope_without_tenants_re_prices_nothing(tree):
    """A caller who may see no tenant: an empty answer, not a query Django refuses to build."""
    store(call("team-a", at(1), model="gpt-4o", provider="openai", input_tokens=2_000, output_tokens=500))
    nobody = replace(scope_of(tree["team-a"]), tenant_ids=[])
    report = model_what_if(nobody, model="gpt-4o-mini")
    assert (report["requests"], report["repriced_cost_nanos"], report["by_model"]) == (0, 0, [])
    assert substitution_opportunities(nobody) == []


def test_candidates_whose_calls_vanish_before_they_are_read_are_skipped(tree, monkeypatch):
    """Candidates come from one query and the calls from the next: a re-rating in between (here,
    the gpt-4o calls deleted) must leave that candidate out, not fail the report."""
    chat, search = {"feature": "chat"}, {"feature": "search"}
    store(
        call("team-a", at(1), model="gpt-4o", provider="openai", input_tokens=3_000, output_tokens=400, tags=chat),
        call("team-b", at(2), model="gpt-4o-mini", provider="openai", input_tokens=1_000, output_tokens=100, tags=chat),
        call("team-a", at(3), model="claude-sonnet-4-5", provider="anthropic", input_tokens=3_000, output_tokens=400,
             tags=search),
        call("team-b", at(4), model="claude-3-5-haiku-latest", provider="anthropic", input_tokens=1_000,
             output_tokens=100, tags=search),
    )  # fmt: skip
    fetch = optimisation_selectors._calls_fetch

    def fetch_after_a_rerate(records, **kwargs):
        UsageRecord.objects.filter(model_id="gpt-4o").delete()
        return fetch(records, **kwargs)

    monkeypatch.setattr(optimisation_selectors, "_calls_fetch", fetch_after_a_rerate)
    found = substitution_opportunities(scope_of(tree["org"]))
    assert [(entry["feature"], entry["model"], entry["alternative"]) for entry in found] == [
        ("search", "claude-sonnet-4-5", "claude-3-5-haiku-latest")
    ]


def test_calls_read_in_chunks_are_re_priced_as_in_one(tree, monkeypatch):
    """Calls are read and turned into columns a chunk at a time: a model or feature seen again in a
    later chunk must keep its code (it once got a new one, and its calls were split)."""
    chat, search = {"feature": "chat"}, {"feature": "search"}
    calls = []
    for index in range(7):
        for model, provider in (
            ("gpt-4o", "openai"),
            ("gpt-4o-mini", "openai"),
            ("claude-3-5-haiku-latest", "anthropic"),
        ):
            calls.append(call("team-a" if index % 2 else "team-b", at(index % 5 + 1, index), model=model,
                              provider=provider, input_tokens=1_000 + 37 * index, output_tokens=100 + index,
                              tags=chat if index % 3 else search))  # fmt: skip
    store(*calls)
    scope = scope_of(tree["org"])
    whole = (substitution_opportunities(scope), model_what_if(scope, model="gpt-4o-mini"))
    monkeypatch.setattr(optimisation_selectors, "_CALLS_CHUNK", 2)
    assert (substitution_opportunities(scope), model_what_if(scope, model="gpt-4o-mini")) == whole
    assert whole[1]["requests"] == 21 and len(whole[0]) == 4


# --- routing policies --------------------------------------------------------------------------------------


@pytest.fixture
def ab_policy(tree):
    return routing_policy_save(
        policy=RoutingPolicy(
            tenant=tree["org"],
            name="Chat to small",
            share=Decimal("0.5"),
            split_tag="user",
            active_from=at(5),
        ),
        rules=[{"tag_key": "feature", "tag_value": "chat", "target_model": "small"}],
    )


def test_routing_policy_report_before_after_and_ab_arms(tree, ab_policy, settings):
    arm = {"routing_policy": str(ab_policy.pk), "feature": "chat"}
    store(
        # Before (the 6 days before active_from): chat at 0.40 a call; search is not the policy's traffic.
        *[call("team-a", at(day), cost="0.40", model="big", tags={"feature": "chat"}) for day in (0, 1, 2, 4)],
        call("team-a", at(3), cost="1.00", model="big", tags={"feature": "search"}),
        # After: the policy arm on the small model, the control arm on the big one, one untagged call.
        call("team-a", at(6), cost="0.10", model="small", latency=100, tags={**arm, "routing_arm": "policy"}),
        call("team-b", at(7), cost="0.20", model="small", latency=200, tags={**arm, "routing_arm": "policy"}),
        call("team-a", at(8), cost="0.30", model="small", latency=300, status="error",
             tags={**arm, "routing_arm": "policy"}),
        call("team-a", at(6), cost="0.40", model="big", latency=1000, tags={**arm, "routing_arm": "control"}),
        call("team-b", at(9), cost="0.40", model="big", latency=1000, tags={**arm, "routing_arm": "control"}),
        call("team-a", at(10), cost="0.40", model="big", tags={"feature": "chat"}),
        call("other-org", at(7), cost="9.00", model="big", tags={**arm, "routing_arm": "control"}),
    )  # fmt: skip
    report = routing_policy_report(
        ab_policy, visible_tenant_ids=tenant_descendant_ids(tree["org"].pk), now=NOW
    )
    before, after = report["before_after"]["before"], report["before_after"]["after"]
    assert (before["start"], before["end"], after["end"]) == (at(-1), at(5), NOW)
    assert (before["requests"], before["list_cost_nanos"], before["cost_per_request_nanos"]) == (
        4,
        nanos("1.60"),
        nanos("0.40"),
    )
    assert (after["requests"], after["list_cost_nanos"], after["cost_per_request_nanos"]) == (
        6,
        nanos("1.80"),
        nanos("0.30"),
    )
    assert report["before_after"]["change_percent"] == -25.0
    policy, control = report["ab_test"]["policy"], report["ab_test"]["control"]
    assert (policy["requests"], policy["errors"], policy["cost_per_request_nanos"]) == (3, 1, nanos("0.20"))
    assert (policy["error_rate"], policy["latency_average_ms"], policy["models"]) == (
        0.333333,
        200.0,
        {"small": 3},
    )
    assert (control["requests"], control["cost_per_request_nanos"], control["latency_average_ms"]) == (
        2,
        nanos("0.40"),
        1000.0,
    )
    difference = report["ab_test"]["difference"]
    assert difference["cost_per_request_nanos"] == -nanos("0.20")
    # Welch: sqrt(var(0.1, 0.2, 0.3) / 3 + var(0.4, 0.4) / 2) = sqrt(0.01 / 3) USD, times z = 1.959964.
    margin = round(1.959964 * math.sqrt(0.01 / 3) * USD)
    assert difference["cost_per_request_interval_nanos"] == [-nanos("0.20") - margin, -nanos("0.20") + margin]
    assert margin == 113_158_574
    assert difference["cost_difference_is_significant"] is True
    assert (
        difference["error_rate"] == 0.333333 and difference["error_rate_difference_is_significant"] is False
    )
    # All of the control arm's calls at the policy arm's cost per request: 0.80 - 2 x 0.20 over 6 days.
    assert report["ab_test"]["full_adoption"] == {
        "period_savings_nanos": nanos("0.40"),
        "monthly_savings_nanos": nanos("2.00"),
    }
    # A team sees only its own calls.
    team_b = routing_policy_report(ab_policy, visible_tenant_ids=[tree["team-b"].pk], now=NOW)
    assert (team_b["ab_test"]["policy"]["requests"], team_b["ab_test"]["control"]["requests"]) == (1, 1)


def test_savings_report_ranks_every_kind_by_monthly_savings(tree, ab_policy):
    chat = {"feature": "chat"}
    arm = {"routing_policy": str(ab_policy.pk), "feature": "chat"}
    store(
        *[call("team-a", at(1, hour), model="gpt-4o", provider="openai", input_tokens=20_000, output_tokens=500,
               prompt_hash="faq", tags=chat) for hour in range(3)],
        call("team-b", at(2), model="gpt-4o-mini", provider="openai", input_tokens=1_000, output_tokens=100, tags=chat),
        call("team-a", at(3), model="claude-sonnet-4-5", provider="anthropic", input_tokens=50_000, output_tokens=10,
             tags={"feature": "review"}),
        call("team-a", at(6), cost="0.10", model="small", tags={**arm, "routing_arm": "policy"}),
        call("team-a", at(6), cost="0.30", model="big", tags={**arm, "routing_arm": "control"}),
    )  # fmt: skip
    scope = scope_of(tree["org"])
    report = savings_report(scope)
    kinds = [entry["kind"] for entry in report["opportunities"]]
    assert set(kinds) == {"exact_cache", "prompt_caching", "model_substitution", "routing_rollout"}
    monthly = [entry["monthly_savings_nanos"] for entry in report["opportunities"]]
    assert monthly == sorted(monthly, reverse=True)
    assert [entry["rank"] for entry in report["opportunities"]] == list(range(1, len(kinds) + 1))
    by_kind = {entry["kind"]: entry for entry in reversed(report["opportunities"])}  # each kind's best
    caching = caching_report(scope)
    assert by_kind["exact_cache"]["monthly_savings_nanos"] == caching["exact_cache"]["monthly_saved_nanos"]
    assert by_kind["exact_cache"]["period_savings_nanos"] == 2 * genai_nanos(
        "gpt-4o", "openai", at(1), input_tokens=20_000, output_tokens=500
    )
    sonnet = next(entry for entry in report["opportunities"] if entry["model"] == "claude-sonnet-4-5")
    assert sonnet["kind"] == "prompt_caching"
    assert [sonnet["monthly_savings_nanos"]] == [
        row["monthly_potential_savings_nanos"]
        for row in caching["prompt_caching"]
        if row["model"] == "claude-sonnet-4-5"
    ]
    substitution = substitution_opportunities(scope)[0]
    assert by_kind["model_substitution"]["title"] == "Move chat from gpt-4o to gpt-4o-mini"
    assert by_kind["model_substitution"]["monthly_savings_nanos"] == substitution["monthly_savings_nanos"]
    # 0.30 - 0.10 per control call, since active_from (6 days): 0.20 x 30 / 6.
    assert by_kind["routing_rollout"]["monthly_savings_nanos"] == nanos("1.00")
    assert report["monthly_savings_nanos_by_kind"]["routing_rollout"] == nanos("1.00")
    # Another organisation sees none of it.
    other = savings_report(scope_of(tree["other-org"]))
    assert other["opportunities"] == []
