"""Integer money helpers: nanos, atto-USD prices, half-even rounding, markups."""

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chargeback import money


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (5, 2, 2),  # 2.5 -> 2 (tie to even)
        (7, 2, 4),  # 3.5 -> 4 (tie to even)
        (1, 2, 0),  # 0.5 -> 0
        (3, 2, 2),  # 1.5 -> 2
        (-5, 2, -2),  # -2.5 -> -2
        (-7, 2, -4),  # -3.5 -> -4
        (-1, 2, 0),
        (10, 4, 2),  # 2.5 -> 2
        (14, 4, 4),  # 3.5 -> 4
        (7, 3, 2),  # 2.33 -> 2
        (8, 3, 3),  # 2.67 -> 3
        (-8, 3, -3),
        (0, 7, 0),
        (6, 3, 2),
    ],
)
def test_divide_half_even(numerator, denominator, expected):
    assert money.divide_half_even(numerator, denominator) == expected


@pytest.mark.parametrize("denominator", [0, -1])
def test_divide_half_even_rejects_a_non_positive_denominator(denominator):
    with pytest.raises(ValueError):
        money.divide_half_even(1, denominator)


@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=1, max_value=10**20))
def test_divide_half_even_equals_exact_bankers_rounding(numerator, denominator):
    # round() of a Fraction rounds half to even, exactly.
    assert money.divide_half_even(numerator, denominator) == round(Fraction(numerator, denominator))


@pytest.mark.parametrize(
    ("attos", "nanos"),
    [
        (0, 0),
        (10**9, 1),
        (1_500_000_000, 2),  # 1.5 -> 2
        (2_500_000_000, 2),  # 2.5 -> 2
        (2_500_000_001, 3),
        (499_999_999, 0),
        (500_000_000, 0),  # 0.5 -> 0
        (500_000_001, 1),
        (-2_500_000_000, -2),
        (37_500_000_000, 38),  # 37.5 -> 38
    ],
)
def test_attos_to_nanos_rounds_half_even(attos, nanos):
    assert money.attos_to_nanos(attos) == nanos


@pytest.mark.parametrize(
    ("amount", "nanos"),
    [
        (Decimal("1.23"), 1_230_000_000),
        ("0.004375", 4_375_000),
        (3, 3_000_000_000),
        ("0", 0),
        (Decimal("0.0000000005"), 0),  # half a nano: tie to even (0)
        (Decimal("0.0000000015"), 2),  # 1.5 -> 2
        (Decimal("0.0000000025"), 2),  # 2.5 -> 2
        (Decimal("0.00000000250000001"), 3),
        (Decimal("-0.0000000025"), -2),
        ("-1.5", -1_500_000_000),
        (Decimal("1E-9"), 1),
        ("12345678901.123456789", 12_345_678_901_123_456_789),
    ],
)
def test_usd_to_nanos(amount, nanos):
    assert money.usd_to_nanos(amount) == nanos


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", Decimal("NaN"), "abc", "", "1,5"])
def test_usd_to_nanos_rejects_non_amounts(amount):
    with pytest.raises(ValueError):
        money.usd_to_nanos(amount)


@given(
    st.decimals(
        min_value=Decimal("-1000000"),
        max_value=Decimal("1000000"),
        places=14,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_usd_to_nanos_equals_decimal_quantize_half_even(amount):
    with localcontext() as context:
        context.prec = 50
        expected = int(amount.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN).scaleb(9))
    assert money.usd_to_nanos(amount) == expected
    assert money.usd_to_nanos(str(amount)) == expected


@pytest.mark.parametrize(
    ("per_mtok", "attos"),
    [
        (Decimal("2.5"), 2_500_000_000_000),
        (Decimal("0.0375"), 37_500_000_000),
        (Decimal("0"), 0),
        (Decimal("0.000000000001"), 1),  # 12 decimals per million tokens = 1 atto per token
        (Decimal("1000"), 1_000_000_000_000_000),
    ],
)
def test_usd_per_mtok_to_attos_per_token(per_mtok, attos):
    assert money.usd_per_mtok_to_attos_per_token(per_mtok) == attos


def test_usd_per_mtok_to_attos_per_token_rejects_a_13th_decimal():
    with pytest.raises(ValueError):
        money.usd_per_mtok_to_attos_per_token(Decimal("0.0000000000001"))


def test_usd_to_attos_exact():
    assert money.usd_to_attos_exact(Decimal("0.0000025")) == 2_500_000_000_000
    assert money.usd_to_attos_exact(Decimal("1E-18")) == 1
    with pytest.raises(ValueError):
        money.usd_to_attos_exact(Decimal("1E-19"))


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (4_375_000, "0.004375000"),
        (0, "0.000000000"),
        (1, "0.000000001"),
        (-1, "-0.000000001"),
        (1_000_000_000, "1.000000000"),
        (123_456_789_012_345_678, "123456789.012345678"),
        (9_223_372_036_854_775_807, "9223372036.854775807"),  # the largest BigIntegerField
        (None, None),
    ],
)
def test_nanos_to_str(nanos, text):
    assert money.nanos_to_str(nanos) == text


def test_nanos_to_decimal_is_exact():
    assert money.nanos_to_decimal(4_375_000) == Decimal("0.004375")
    assert money.nanos_to_decimal(None) is None
    assert str(money.nanos_to_decimal(1)) == "1E-9"


@pytest.mark.parametrize(
    ("nanos", "percent", "expected"),
    [
        (1_000, Decimal("10"), 1_100),  # markup
        (1_000, Decimal("-15"), 850),  # discount
        (1_000, Decimal("0"), 1_000),
        (1_000, Decimal("-100"), 0),
        (1_000_000, Decimal("12.3456"), 1_123_456),
        (5, Decimal("-50"), 2),  # 2.5 -> 2
        (7, Decimal("-50"), 4),  # 3.5 -> 4
        (1, Decimal("50"), 2),  # 1.5 -> 2
        (3, Decimal("50"), 4),  # 4.5 -> 4
        (0, Decimal("25"), 0),
        (-1_000, Decimal("10"), -1_100),
    ],
)
def test_apply_percent(nanos, percent, expected):
    assert money.apply_percent(nanos, percent) == expected


def test_apply_percent_accepts_integers_and_strings_of_percent():
    assert money.apply_percent(200, 5) == 210
    assert money.apply_percent(200, "5") == 210


def test_apply_percent_rejects_more_than_four_decimals():
    with pytest.raises(ValueError):
        money.apply_percent(1_000, Decimal("1.00001"))


@given(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.decimals(min_value=Decimal("-100"), max_value=Decimal("500"), places=4),
)
def test_apply_percent_equals_exact_half_even(nanos, percent):
    expected = round(Fraction(nanos) * (100 + Fraction(percent)) / 100)
    assert money.apply_percent(nanos, percent) == expected


@given(st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 7 * 10**18)), min_size=1, max_size=40))
def test_attos_to_nanos_many_rounds_each_amount_like_attos_to_nanos(amounts):
    whole = np.array([nanos for nanos, _ in amounts], dtype=np.int64)
    attos = np.array([rest for _, rest in amounts], dtype=np.int64)
    assert money.attos_to_nanos_many(whole, attos).tolist() == [
        money.attos_to_nanos(nanos * money.ATTOS_PER_NANO + rest) for nanos, rest in amounts
    ]


def test_attos_to_nanos_many_breaks_ties_to_even_on_the_whole_amount():
    half = money.ATTOS_PER_NANO // 2
    whole = np.array([4, 5, 4, 5], dtype=np.int64)
    attos = np.array([half, half, 3 * half, 3 * half], dtype=np.int64)  # 4.5, 5.5, 5.5, 6.5 nanos
    assert money.attos_to_nanos_many(whole, attos).tolist() == [4, 6, 6, 6]
