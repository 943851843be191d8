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


def opportunity_evidence(entry: dict) -> list[str]:
    """The evidence behind an opportunity's figure, in words (the API and the CSV carry it as data)."""
    evidence = entry["evidence"]

    def usd_text(text: str | None) -> str:
        return usd(None if text is None else money.usd_to_nanos(text))

    def error_percent(statistics: dict | None) -> str:
        rate = (statistics or {}).get("error_rate")
        return percent(None if rate is None else rate * 100)

    def p95(statistics: dict | None) -> str:
        return milliseconds((statistics or {}).get("latency_p95_ms"))

    kind = entry["kind"]
    if kind == "exact_cache":
        return [
            f"{count(evidence['cache_hits'])} of {count(evidence['requests'])} requests answerable from a "
            f"cache; distinct prompts repeated: {count(evidence['repeated_prompts'])}",
            f"list cost {usd_text(evidence['list_cost_usd'])}",
        ]
    if kind == "prompt_caching":
        return [
            f"{count(evidence['input_tokens'])} input tokens, "
            f"{count(evidence['cached_input_tokens'])} cached; "
            f"{count(evidence['extra_cached_tokens'])} more cached",
            f"input {usd_text(evidence['input_price_per_mtok_usd'])}, cache read "
            f"{usd_text(evidence['cache_read_price_per_mtok_usd'])} per million tokens",
        ]
    if kind == "model_substitution":
        current, alternative = evidence["model_statistics"], evidence["alternative_statistics"]
        return [
            f"{count(evidence['requests'])} requests: {usd_text(evidence['list_cost_usd'])} on "
            f"{entry['model']}, {usd_text(evidence['repriced_cost_usd'])} at {entry['alternative']}'s prices",
            f"errors {error_percent(current)} and p95 latency {p95(current)} on {entry['model']}; "
            f"{error_percent(alternative)} and {p95(alternative)} on {entry['alternative']} "
            f"({count((alternative or {}).get('requests'))} requests)",
        ]
    if kind == "routing_rollout":
        error_difference = evidence["error_rate_difference"]
        return [
            f"policy arm {count(evidence['policy_requests'])} requests, control "
            f"{count(evidence['control_requests'])}",
            f"policy minus control: {usd_text(evidence['cost_per_request_difference_usd'])} per request ("
            + ("significant at 95 %)" if evidence["significant"] else "not significant yet)"),
            "policy minus control: error rate "
            + percent(None if error_difference is None else error_difference * 100, digits=2),
        ]
    return [f"{key.replace('_', ' ')} {value}" for key, value in evidence.items() if value is not None]
