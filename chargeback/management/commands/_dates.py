"""Shared argument parsing for the usage commands: local dates of a tenant's time zone."""

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from django.core.management.base import CommandError


def parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from error


def local_midnight(day: date, time_zone: str) -> datetime:
    """Midnight starting `day` in the zone, as an aware datetime (DST handled by zoneinfo)."""
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(time_zone))
