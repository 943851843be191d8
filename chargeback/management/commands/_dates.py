"""Shared argument parsing for the usage commands."""

from datetime import date

from django.core.management.base import CommandError


def parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from error
