"""Reading `timestamp,value` CSV files for the analyst commands."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.management.base import CommandError


def read_series(path: str) -> list[tuple[datetime, float]]:
    """(timestamp, value) rows of a CSV with a header naming `timestamp` and `value`, sorted by time.
    Timestamps are ISO 8601 (a date alone is midnight); without a zone they are UTC."""
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"No such file: {path}")
    rows = []
    with file.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"timestamp", "value"} <= set(reader.fieldnames):
            raise CommandError("The CSV needs a header with the columns timestamp and value.")
        for line, row in enumerate(reader, start=2):
            try:
                moment = datetime.fromisoformat(row["timestamp"].strip().replace("Z", "+00:00"))
            except ValueError as error:
                raise CommandError(
                    f"Line {line}: {row['timestamp']!r} is not an ISO 8601 timestamp."
                ) from error
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            try:
                value = Decimal(row["value"].strip() or "0")
            except InvalidOperation as error:
                raise CommandError(f"Line {line}: {row['value']!r} is not a number.") from error
            if not value.is_finite() or value < 0:
                raise CommandError(f"Line {line}: values must be finite and not negative.")
            rows.append((moment.astimezone(UTC), float(value)))
    if not rows:
        raise CommandError("The CSV has no rows.")
    rows.sort(key=lambda row: row[0])
    return rows
