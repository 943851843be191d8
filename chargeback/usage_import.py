"""Streaming readers for usage files (JSONL/NDJSON or CSV, optionally gzipped), in constant memory."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from chargeback.usage_input import TextRecord

# CSV columns that are not record fields: tag.<key> columns become tags.
TAG_COLUMN_PREFIX = "tag."


def _open_binary(path: Path) -> IO[bytes]:
    handle = path.open("rb")
    if handle.read(2) == b"\x1f\x8b":
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle)
    handle.seek(0)
    return handle


def _is_csv(path: Path) -> bool:
    suffixes = [suffix.lower() for suffix in path.suffixes]
    return ".csv" in suffixes


def _csv_record(row: dict[str, str]) -> TextRecord:
    record = TextRecord()
    tags: dict[str, str] = {}
    for column, value in row.items():
        if column is None or value is None or value == "":
            continue
        if column.startswith(TAG_COLUMN_PREFIX):
            tags[column[len(TAG_COLUMN_PREFIX) :]] = value
        else:
            record[column] = value
    if tags:
        record["tags"] = tags
    return record


def usage_file_records(path: Path) -> Iterator[Any]:
    """Yield the file's records one at a time: JSON lines as bytes, CSV rows as mappings."""
    with _open_binary(path) as handle:
        if _is_csv(path):
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            for row in csv.DictReader(text):
                yield _csv_record(row)
        else:
            for line in handle:
                if line.strip():
                    yield line


def batched(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
