"""Request body parsers for ingestion: bounded, gzip-aware, and returning raw bytes so that the
records are decoded once, by msgspec, not by DRF."""

import json
import zlib

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from chargeback.errors import ApiError, PayloadTooLarge


def read_bounded_body(stream, meta: dict, limit: int | None) -> bytes:
    """The request body, gunzipped if so encoded; 413 when it (or its decompression) exceeds limit
    (None: no limit, as Django's DATA_UPLOAD_MAX_MEMORY_SIZE allows)."""
    if limit is None:
        limit = 2**62
    declared = meta.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {limit}.")
    body = stream.read(limit + 1) if stream is not None else b""
    if len(body) > limit:
        raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    encoding = meta.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ApiError(
            f"Content-Encoding {encoding!r} is not supported; use gzip or none.",
            code="unsupported_content_encoding",
            status_code=415,
        )
    decompressor = zlib.decompressobj(wbits=31)
    try:
        inflated = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise ApiError("The body is not valid gzip.", code="invalid_gzip") from error
    if len(inflated) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"The decompressed body exceeds the limit of {limit} bytes.")
    if not decompressor.eof:
        raise ApiError("The gzip body is truncated.", code="invalid_gzip")
    return inflated


class RawJsonParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        return read_bounded_body(stream, request.META, settings.INGEST_MAX_BODY_BYTES)


class RawNdjsonParser(RawJsonParser):
    media_type = "application/x-ndjson"


class RawJsonLinesParser(RawJsonParser):
    media_type = "application/jsonl"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class JsonParser(BaseParser):
    """The API's JSON parser (DRF's default replaced): the body is bounded by
    DATA_UPLOAD_MAX_MEMORY_SIZE, after gzip decompression too (413 `payload_too_large`), and, as
    DRF's strict parser, NaN and Infinity are not JSON."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        body = read_bounded_body(stream, request.META, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as error:
            raise ParseError(f"JSON parse error - {error}") from error
