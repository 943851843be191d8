"""How figures read on the pages: money from exact nanos, percentages, counts and durations."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from chargeback import money

# Shown for a figure that does not exist (no requests, no latency): not the same as zero.
NOT_AVAILABLE = "\N{EN DASH}"
MINUS_SIGN = "\N{MINUS SIGN}"


def usd(nanos: int | None) -> str:
    """`$1,234.57` for amounts of a dollar or more; small amounts keep enough digits to differ
    from zero (`$0.0042`), because a page full of `$0.00` says nothing."""
    if nanos is None:
        return NOT_AVAILABLE
    amount = money.nanos_to_decimal(nanos)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount >= 1 or amount == 0:
        return f"{sign}${amount.quantize(Decimal('0.01'), ROUND_HALF_EVEN):,}"
    if amount >= Decimal("0.01"):
        return f"{sign}${amount.quantize(Decimal('0.0001'), ROUND_HALF_EVEN)}"
    return f"{sign}${amount.quantize(Decimal('0.000001'), ROUND_HALF_EVEN).normalize():f}"


def usd_cents(cents: int | None) -> str:
    """A statement amount: whole cents, as finance reads them."""
    if cents is None:
        return NOT_AVAILABLE
    sign = "-" if cents < 0 else ""
    return f"{sign}${Decimal(abs(cents)) / 100:,.2f}"


def usd_axis(amount: float) -> str:
    """An axis tick in dollars, as short as its step allows."""
    if amount == 0:
        return "$0"
    if abs(amount) >= 1000:
        return f"${amount / 1000:,.4g}k"
    if abs(amount) >= 10:
        return f"${amount:,.0f}"
    return f"${amount:.4g}"


def percent(value: float | None, *, digits: int = 1) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.{digits}f}%"


def count(value: int | None) -> str:
    return NOT_AVAILABLE if value is None else f"{value:,}"


def short_count(value: float) -> str:
    """An axis tick for counts: 1.5k, 2M."""
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def milliseconds(value: float | None) -> str:
    if value is None:
        return NOT_AVAILABLE
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms"


def change(current: int, previous: int) -> dict:
    """The change from the previous period, for a table cell: text, direction and an accessible word."""
    if previous == 0:
        if current == 0:
            return {"text": "no change", "direction": "flat", "percent": 0.0}
        return {"text": "new", "direction": "up", "percent": None}
    ratio = (current - previous) * 100 / previous
    if abs(ratio) < 0.05:
        return {"text": "no change", "direction": "flat", "percent": 0.0}
    direction = "up" if ratio > 0 else "down"
    return {
        "text": f"{'+' if ratio > 0 else MINUS_SIGN}{abs(ratio):.1f}%",
        "direction": direction,
        "percent": ratio,
    }
