"""Template filters for figures on the pages (dashboards.formatting), and CSS lengths."""

from django import template

from dashboards import formatting

register = template.Library()


@register.filter
def usd(nanos):
    return formatting.usd(nanos)


@register.filter
def cents(value):
    return formatting.usd_cents(value)


@register.filter
def count(value):
    return formatting.count(value)


@register.filter
def percent(value, digits=1):
    return formatting.percent(value, digits=int(digits))


@register.filter
def milliseconds(value):
    return formatting.milliseconds(value)


@register.filter
def css_number(value):
    """A number for a style or SVG attribute: never localized, never in exponent notation."""
    return f"{float(value):.2f}"
