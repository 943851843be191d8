"""Ingestion from other tools' own formats: OTLP/HTTP traces and LiteLLM's generic API callback."""

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from rest_framework import exceptions, generics, status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from chargeback.errors import ApiError
from chargeback.litellm_callback import litellm_body_split, litellm_payloads_ingest
from chargeback.otlp import OtlpBodyError, otlp_request_decode, otlp_response_encode, otlp_traces_ingest
from chargeback.parsers import RawJsonParser, read_bounded_body
from chargeback.serializers import UsageIngestResultSerializer
from chargeback.throttling import RETRY_AFTER_HEADER, IngestRateThrottle
from chargeback.usage_api import _ERROR_RESPONSE
from chargeback.usage_input import BodyError
from tenants.permissions import HasIngestScope
from tenants.scoping import visible_tenant_ids

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# HTTP status → google.rpc.Code, for the Status body OTLP/HTTP expects on errors.
_RPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    413: 8,  # RESOURCE_EXHAUSTED
    415: 3,  # INVALID_ARGUMENT
    429: 8,  # RESOURCE_EXHAUSTED
    500: 13,  # INTERNAL
    503: 14,  # UNAVAILABLE
}


class OtlpProtobufParser(BaseParser):
    media_type = PROTOBUF

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        return read_bounded_body(stream, request.META, settings.INGEST_MAX_BODY_BYTES)


class LiteLlmJsonParser(BaseParser):
    """LiteLLM sends every log format (array, NDJSON, single) as application/json."""

    media_type = JSON

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        return read_bounded_body(stream, request.META, settings.LITELLM_MAX_BODY_BYTES)


class LiteLlmNdjsonParser(LiteLlmJsonParser):
    media_type = "application/x-ndjson"


def _media_type(request) -> str:
    return request.content_type.split(";")[0].strip().lower()


_OTLP_BODY = {
    PROTOBUF: OpenApiTypes.BINARY,
    JSON: {
        "type": "object",
        "description": "ExportTraceServiceRequest in OTLP JSON (hex trace and span ids, integer enums).",
        "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}},
    },
}
_OTLP_STATUS = {
    "type": "object",
    "description": "google.rpc.Status",
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
}
_OTLP_ERROR = OpenApiResponse(
    response=_OTLP_STATUS,
    description="google.rpc.Status, for a JSON request; our error code is in X-Chargeback-Error-Code",
)
_OTLP_ERROR_PROTOBUF = OpenApiResponse(
    response=OpenApiTypes.BINARY,
    description="google.rpc.Status, for a protobuf request; our error code is in X-Chargeback-Error-Code",
)


class OtlpTracesApi(generics.GenericAPIView):
    """OTLP/HTTP traces receiver. Errors are google.rpc.Status bodies, as the OTLP spec asks, not
    the API's usual error object; everything else about auth and ingestion is the usual."""

    parser_classes = [OtlpProtobufParser, RawJsonParser]
    permission_classes = [HasIngestScope]
    throttle_classes = [IngestRateThrottle]
    bounds_own_request_body = True  # INGEST_MAX_BODY_BYTES, decompressed too (the parsers)

    def _json(self) -> bool:
        request = getattr(self, "request", None)
        return request is None or _media_type(request) != PROTOBUF

    @extend_schema(
        tags=["integrations"],
        summary="OTLP/HTTP traces: GenAI spans become usage records (protobuf or JSON; gzip allowed)",
        description=(
            "Point an OpenTelemetry OTLP/HTTP exporter here. Spans with a GenAI provider, model and "
            "token usage are stored (source 'otlp', event id otlp-<trace id>-<span id>); other spans "
            "are ignored and counted in the X-Chargeback-Ignored-Spans header. The tenant and tags "
            "come from span and resource attributes by OTLP_ATTRIBUTE_MAPPING."
        ),
        request=_OTLP_BODY,
        parameters=[RETRY_AFTER_HEADER],
        responses={
            (200, JSON): OpenApiResponse(
                response={
                    "type": "object",
                    "description": "ExportTraceServiceResponse: {} or {partialSuccess: {rejectedSpans, errorMessage}}",
                    "properties": {
                        "partialSuccess": {
                            "type": "object",
                            "properties": {
                                "rejectedSpans": {"type": "string"},
                                "errorMessage": {"type": "string"},
                            },
                        }
                    },
                },
                description="ExportTraceServiceResponse, for a JSON request",
            ),
            (200, PROTOBUF): OpenApiResponse(
                response=OpenApiTypes.BINARY,
                description="ExportTraceServiceResponse, for a protobuf request (empty on full success)",
            ),
            **{(code, JSON): _OTLP_ERROR for code in (400, 401, 403, 413, 415, 429)},
            **{(code, PROTOBUF): _OTLP_ERROR_PROTOBUF for code in (400, 401, 403, 413, 415, 429)},
        },
    )
    def post(self, request):
        media_type = _media_type(request)
        if media_type not in (PROTOBUF, JSON):
            raise exceptions.UnsupportedMediaType(
                media_type or "(none)",
                detail=f"Content-Type {media_type or '(none)'!r} is not supported; send {PROTOBUF} or {JSON}.",
            )
        json = media_type == JSON
        body = request.data
        if not isinstance(body, bytes):  # DRF hands an empty body to no parser
            body = b""
        try:
            message = otlp_request_decode(body, json=json)
        except OtlpBodyError as error:
            raise ApiError(str(error), code="invalid_otlp_body") from error
        api_key = request.auth
        result = otlp_traces_ingest(
            request=message,
            scope_tenant_ids=visible_tenant_ids(api_key),
            default_tenant_id=api_key.tenant_id,
        )
        response = HttpResponse(
            otlp_response_encode(result.response(), json=json), content_type=JSON if json else PROTOBUF
        )
        response["X-Chargeback-Ignored-Spans"] = str(result.ignored)
        response["X-Chargeback-Accepted-Spans"] = str(result.ingest.accepted)
        response["X-Chargeback-Duplicate-Spans"] = str(result.ingest.duplicates)
        response["X-Chargeback-Rejected-Spans"] = str(result.rejected)
        return response

    def handle_exception(self, exc):
        # The usual handler decides the status, message and auth headers; only the body changes.
        handled = super().handle_exception(exc)
        error = handled.data.get("error", {}) if isinstance(handled.data, dict) else {}
        rpc_status = Status(
            code=_RPC_CODES.get(handled.status_code, 2),  # 2: UNKNOWN
            message=str(error.get("message", "")),
        )
        json = self._json()
        response = HttpResponse(
            json_format.MessageToJson(rpc_status, indent=None) if json else rpc_status.SerializeToString(),
            status=handled.status_code,
            content_type=JSON if json else PROTOBUF,
        )
        response["X-Chargeback-Error-Code"] = str(error.get("code", ""))
        for header in ("WWW-Authenticate", "Retry-After"):
            if header in handled:
                response[header] = handled[header]
        return response


class LiteLlmCallbackApi(generics.GenericAPIView):
    parser_classes = [LiteLlmJsonParser, LiteLlmNdjsonParser]
    permission_classes = [HasIngestScope]
    serializer_class = UsageIngestResultSerializer
    throttle_classes = [IngestRateThrottle]
    bounds_own_request_body = True  # LITELLM_MAX_BODY_BYTES, decompressed too (the parsers)

    @extend_schema(
        tags=["integrations"],
        summary="LiteLLM generic API callback (StandardLoggingPayload: JSON array, NDJSON or one object)",
        description=(
            "Configure LiteLLM's generic_api callback to POST here. Each payload becomes a usage record "
            "(source 'litellm', event id litellm-<litellm_call_id>); cache hits are skipped and counted "
            "in X-Chargeback-Ignored. The answer counts records like POST /api/v1/usage/."
        ),
        request={
            JSON: {"type": "array", "items": {"type": "object", "description": "StandardLoggingPayload"}},
            "application/x-ndjson": {"type": "object", "description": "StandardLoggingPayload"},
        },
        responses={
            200: UsageIngestResultSerializer,
            400: _ERROR_RESPONSE,
            401: _ERROR_RESPONSE,
            403: _ERROR_RESPONSE,
            413: _ERROR_RESPONSE,
            415: _ERROR_RESPONSE,
            422: _ERROR_RESPONSE,
            429: _ERROR_RESPONSE,
        },
        parameters=[RETRY_AFTER_HEADER],
    )
    def post(self, request):
        body = request.data
        if not isinstance(body, bytes):
            body = b""
        try:
            # No count limit beyond the body's: the payloads are stored in slices of the usual size.
            items = litellm_body_split(body)
        except BodyError as error:
            raise ApiError(error.message, code=error.code) from error
        api_key = request.auth
        result = litellm_payloads_ingest(
            items=items,
            scope_tenant_ids=visible_tenant_ids(api_key),
            default_tenant_id=api_key.tenant_id,
        )
        counts = result.ingest.as_dict()
        if counts["accepted"] + counts["duplicates"] + result.cache_hits == 0:
            raise ApiError(
                "No payload in the request was stored; see details.errors.",
                code="no_valid_records",
                details=counts,
                status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        response = Response(counts)
        response["X-Chargeback-Ignored"] = str(result.cache_hits)
        return response
