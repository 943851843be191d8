"""The allowance check's hand-written request and response paths give exactly what the DRF
serializers give (they exist only because the serializers' generic loops were slow)."""

import json
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.renderers import JSONRenderer

from budgets.models import Budget
from budgets.selectors import AllowanceDecision
from budgets.serializers import (
    AllowanceRequestSerializer,
    AllowanceResponseSerializer,
    allowance_request_fast,
    allowance_response_data,
)
from tenants.models import Tenant

_text = st.one_of(
    st.sampled_from(["", " ", "gpt-4o", " gpt-4o", "gpt-4o\n", "openai", "a b", "é", "x" * 256, "x" * 257]),
    st.sampled_from(["team-1", "Team_2", "bad slug", "a\x00b", "\ud800", "ümlaut", "\u00a0x"]),
    st.text(max_size=8),
)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 2 * 10**9), st.floats(allow_nan=True), _text)
_usd = st.one_of(
    st.sampled_from(
        [
            "0.01",
            "0",
            "1.5",
            "123456789.123456789",
            "1234567890",
            "0.0000000001",
            "-1",
            "1e3",
            " 1",
            "1.",
            ".5",
            "NaN",
            "000000001.000000000",
            "٣",
        ]
    ),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str),
    _scalar,
)
_tags = st.one_of(
    st.dictionaries(_text, st.one_of(_text, _scalar), max_size=3), _scalar, st.lists(_text, max_size=2)
)
_request = st.fixed_dictionaries(
    {},
    optional={
        "tenant": st.one_of(_text, _scalar),
        "provider": st.one_of(_text, _scalar),
        "model": st.one_of(_text, _scalar),
        "tags": _tags,
        "estimated_cost_usd": _usd,
        "estimated_input_tokens": st.one_of(st.integers(-1, 10**9 + 1), _scalar),
        "estimated_output_tokens": st.one_of(st.integers(-1, 10**9 + 1), _scalar),
        "unknown": _scalar,
    },
)


def _same(fast: dict, slow: dict) -> None:
    assert fast == slow
    assert list(fast) == list(slow)
    for key, value in slow.items():
        assert type(fast[key]) is type(value)
        if isinstance(value, Decimal):
            assert str(fast[key]) == str(value)


@settings(max_examples=600, deadline=None)
@given(_request)
def test_request_fast_path_agrees_with_the_serializer(data):
    fast = allowance_request_fast(data)
    serializer = AllowanceRequestSerializer(data=data)
    if fast is not None:
        assert serializer.is_valid(), serializer.errors
        _same(fast, serializer.validated_data)


def test_request_fast_path_takes_the_usual_requests():
    usual = [
        {},
        {
            "model": "gpt-4o",
            "provider": "openai",
            "estimated_cost_usd": "0.01",
            "tags": {"feature": "search"},
        },
        {
            "tenant": "team-a",
            "estimated_input_tokens": 1200,
            "estimated_output_tokens": 300,
            "model": "gpt-4o",
        },
        {"tenant": "acme", "tags": {"customer": "Müller GmbH", "feature": "chat"}, "provider": ""},
    ]
    for data in usual:
        fast = allowance_request_fast(data)
        assert fast is not None
        serializer = AllowanceRequestSerializer(data=data)
        assert serializer.is_valid()
        _same(fast, serializer.validated_data)
    for unusual in [
        [],
        {"tenant": None},
        {"estimated_cost_usd": 0.01},
        {"model": " gpt-4o"},
        {"tags": {"a": ""}},
    ]:
        assert allowance_request_fast(unusual) is None


def _decisions():
    tenant = Tenant(slug="team-a", time_zone="Europe/Berlin")
    budget = Budget(id=7, name="Team monthly", tenant=tenant, action=Budget.Action.BLOCK, amount_nanos=10**9)
    end = datetime(2026, 12, 31, 23, tzinfo=UTC)
    yield AllowanceDecision(True, "No budget applies.", None, None, None, None, "", "none", True)
    yield AllowanceDecision(
        True, "Within every applicable budget.", budget, 250_000_000, 750_000_000, end, "", "counters", True
    )
    yield AllowanceDecision(
        False,
        "Budget 'Team monthly' of team-a has 0 USD left",
        budget,
        1_500_000_001,
        -500_000_001,
        end,
        "gpt-4o-mini",
        "database",
        False,
    )
    yield AllowanceDecision(
        False,
        "Spend cannot be read; the budget fails closed.",
        budget,
        None,
        None,
        None,
        "",
        "unavailable",
        False,
    )


def test_response_data_is_the_serializers():
    for index, decision in enumerate(_decisions()):
        decision.estimated_cost_nanos = [0, 10_000_000, 123_456_789_012, 1][index]
        expected = AllowanceResponseSerializer(decision).data
        data = allowance_response_data(decision)
        assert data == expected
        assert json.dumps(data) == json.dumps(expected)
        assert JSONRenderer().render(data) == JSONRenderer().render(expected)
        assert type(data.serializer) is AllowanceResponseSerializer
        assert data.serializer.instance is decision
