"""All money arithmetic. Amounts are integers of nano-USD (1e-9 USD); never floats.

Finer internal units appear only inside a computation: prices per token are kept in atto-USD
(1e-18 USD) so that every published per-million-token price up to 12 decimals is an exact integer.
"""

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

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


def apply_percent(nanos: int, percent: Decimal) -> int:
    """nanos * (100 + percent) / 100, rounded half-even to a nano: a markup (+) or discount (-)."""
    scaled = Decimal(percent) * 10**4
    if scaled != scaled.to_integral_value():
        raise ValueError("markup percent supports at most 4 decimals")
    return divide_half_even(nanos * (10**6 + int(scaled)), 10**6)
