from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from chargeback.errors import ApiError
from chargeback.filters import UsageRecordFilterSet
from chargeback.pagination import CursorPagination
from chargeback.parsers import RawJsonLinesParser, RawJsonParser, RawNdjsonParser
from chargeback.selectors import usage_record_list
from chargeback.serializers import (
    UsageIngestEnvelopeSerializer,
    UsageIngestResultSerializer,
    UsageRecordIngestSerializer,
    UsageRecordSerializer,
)
from chargeback.services import usage_records_ingest
from chargeback.throttling import RETRY_AFTER_HEADER, IngestRateThrottle
from chargeback.usage_input import BodyError, split_body
from tenants.permissions import HasIngestScope, HasReadScope
from tenants.scoping import visible_tenant_ids

_ERROR_RESPONSE = OpenApiResponse(
    response={
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {},
                },
                "required": ["code", "message"],
            }
        },
    },
    description="Error with a stable code",
)


class UsagePagination(CursorPagination):
    ordering = ("-occurred_at", "-id")


class UsageApi(generics.ListAPIView):
    parser_classes = [RawJsonParser, RawNdjsonParser, RawJsonLinesParser]
    throttle_classes = [IngestRateThrottle]  # POST only (get_throttles)
    bounds_own_request_body = True  # INGEST_MAX_BODY_BYTES, decompressed too (the parsers)
    filterset_class = UsageRecordFilterSet
    pagination_class = UsagePagination
    serializer_class = UsageRecordSerializer

    def get_permissions(self):
        return [HasIngestScope()] if self.request.method == "POST" else [HasReadScope()]

    def get_throttles(self):
        return super().get_throttles() if self.request.method == "POST" else []

    def get_queryset(self):
        return usage_record_list(principal=self.request.auth)

    @extend_schema(
        tags=["usage"],
        summary="Usage records, newest first",
        parameters=[
            OpenApiParameter(
                "tag.feature",
                OpenApiTypes.STR,
                description="Any tag: tag.<key>=<value> (e.g. tag.customer=acme).",
            )
        ],
    )
    def get(self, request):
        return self.list(request)

    @extend_schema(
        tags=["usage"],
        summary="Ingest usage records (JSON array, {records: [...]}, or NDJSON; gzip allowed)",
        request={
            "application/json": UsageRecordIngestSerializer(many=True),
            "application/x-ndjson": UsageRecordIngestSerializer,
            "application/jsonl": UsageIngestEnvelopeSerializer,
        },
        parameters=[RETRY_AFTER_HEADER],
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
    )
    def post(self, request):
        body = request.data
        if not isinstance(body, bytes) or not body.strip():
            raise ApiError("The request body is empty.", code="empty_body")
        try:
            items = split_body(
                body,
                ndjson=request.content_type.split(";")[0].strip() != "application/json",
                max_records=settings.INGEST_MAX_RECORDS,
            )
        except BodyError as error:
            status_code = 413 if error.code == "too_many_records" else 400
            raise ApiError(error.message, code=error.code, status_code=status_code) from error
        api_key = request.auth
        result = usage_records_ingest(
            items=items,
            scope_tenant_ids=visible_tenant_ids(api_key),
            default_tenant_id=api_key.tenant_id,
            source="api",
        ).as_dict()
        if items and result["accepted"] + result["duplicates"] == 0:
            raise ApiError(
                "No record in the request was stored; see details.errors.",
                code="no_valid_records",
                details=result,
                status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        return Response(result)
