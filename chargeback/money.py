"""All money arithmetic. Amounts are integers of nano-USD (1e-9 USD); never floats.

Finer internal units appear only inside a computation: prices per token are kept in atto-USD
(1e-18 USD) so that every published per-million-token price up to 12 decimals is an exact integer.
"""

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import numpy as np

NANOS_PER_USD = 10**9
ATTOS_PER_USD = 10**18
ATTOS_PER_NANO = ATTOS_PER_USD // NANOS_PER_USD
NANOS_PER_CENT = NANOS_PER_USD // 100
_NANO = Decimal("1e-9")


def divide_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, ties to even (exact, no floats)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)
    doubled = 2 * remainder
    if doubled > denominator or (doubled == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def attos_to_nanos(attos: int) -> int:
    return divide_half_even(attos, ATTOS_PER_NANO)


def attos_to_nanos_many(whole_nanos: np.ndarray, attos: np.ndarray) -> np.ndarray:
    """Each `whole_nanos + attos / ATTOS_PER_NANO` rounded half to even: attos_to_nanos of
    `whole_nanos * ATTOS_PER_NANO + attos`, on int64 arrays (non-negative `attos`), for amounts too
    large for int64 in attos."""
    quotient, remainder = np.divmod(attos, ATTOS_PER_NANO)
    nanos = whole_nanos + quotient
    doubled = 2 * remainder
    return nanos + ((doubled > ATTOS_PER_NANO) | ((doubled == ATTOS_PER_NANO) & (nanos % 2 == 1)))


def usd_to_nanos(amount: Decimal | str | int) -> int:
    """A USD amount as nanos, rounded half-even once. Raises ValueError for non-finite amounts."""
    try:
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {amount!r}")
        return int((value * NANOS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    except InvalidOperation as error:
        raise ValueError(f"not an amount: {amount!r}") from error


def usd_per_mtok_to_attos_per_token(price: Decimal) -> int:
    """A price per million tokens as exact atto-USD per token; ValueError if it needs more precision."""
    attos = price * (ATTOS_PER_USD // 10**6)
    if attos != attos.to_integral_value():
        raise ValueError(f"price {price} per million tokens has more than 12 decimals")
    return int(attos)


def usd_to_attos_exact(amount: Decimal) -> int:
    attos = amount * ATTOS_PER_USD
    if attos != attos.to_integral_value():
        raise ValueError(f"amount {amount} is finer than an atto-USD")
    return int(attos)


def nanos_to_decimal(nanos: int | None) -> Decimal | None:
    if nanos is None:
        return None
    return (Decimal(nanos) * _NANO).quantize(_NANO)


def nanos_to_str(nanos: int | None) -> str | None:
    """Nanos as a plain decimal USD string with 9 places, e.g. 4375000 -> '0.004375000'."""
    value = nanos_to_decimal(nanos)
    return None if value is None else format(value, "f")


def percent_factor(percent: Decimal) -> int:
    """(100 + percent) / 100 as an exact integer of millionths, for `apply_factor`."""
    scaled = Decimal(percent) * 10**4
    if scaled != scaled.to_integral_value():
        raise ValueError("markup percent supports at most 4 decimals")
    return 10**6 + int(scaled)


def apply_factor(nanos: int, factor: int) -> int:
    """nanos * factor / 10**6, rounded half-even to a nano (factor from `percent_factor`)."""
    return divide_half_even(nanos * factor, 10**6)


def apply_percent(nanos: int, percent: Decimal) -> int:
    """nanos * (100 + percent) / 100, rounded half-even to a nano: a markup (+) or discount (-)."""
    return apply_factor(nanos, percent_factor(percent))


def round_to_cents(nanos: int) -> int:
    """Nanos to whole cents, half-even."""
    return divide_half_even(nanos, NANOS_PER_CENT)


def cents_from_nanos_conserving(amounts_nanos: list[int]) -> list[int]:
    """Round each amount to cents so that the cents add up to the rounded total (largest remainder).

    Each result is its amount rounded down or up; the leftover cents go to the largest remainders
    (ties to the earlier amount), so that no cent is created or lost by rounding lines separately.
    """
    floors = [amount // NANOS_PER_CENT for amount in amounts_nanos]
    remainders = [
        amount - floor * NANOS_PER_CENT for amount, floor in zip(amounts_nanos, floors, strict=True)
    ]
    extra = round_to_cents(sum(amounts_nanos)) - sum(floors)
    order = sorted(range(len(amounts_nanos)), key=lambda index: (-remainders[index], index))
    for index in order[:extra]:
        floors[index] += 1
    return floors


def split_largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split an integer total (e.g. cents) in proportion to non-negative weights, conserving it
    exactly (largest remainder; ties to the earlier share). All-zero weights split evenly."""
    if not weights:
        return []
    if any(weight < 0 for weight in weights):
        raise ValueError("weights must not be negative")
    if sum(weights) == 0:
        weights = [1] * len(weights)
    weight_sum = sum(weights)
    shares = [total * weight // weight_sum for weight in weights]
    remainders = [total * weight - share * weight_sum for weight, share in zip(weights, shares, strict=True)]
    order = sorted(range(len(weights)), key=lambda index: (-remainders[index], index))
    for index in order[: total - sum(shares)]:
        shares[index] += 1
    return shares


def cents_to_str(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"
