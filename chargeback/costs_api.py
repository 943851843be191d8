"""`GET /api/v1/costs/`: the cost query (chargeback.costs) over HTTP, as JSON or CSV."""

import csv
import io

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from chargeback.costs import (
    GRANULARITIES,
    CostQueryError,
    CostResult,
    cost_query_for,
    cost_result_as_dict,
    costs_query,
)
from chargeback.errors import ApiError
from chargeback.filters import TAG_PARAMETER
from chargeback.models import UsageStatus
from chargeback.openapi import error_response
from tenants.permissions import HasReadScope


class CostRangeParametersSerializer(serializers.Serializer):
    """The time range and tenant of a cost query, read the same way by every report."""

    start = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Inclusive; RFC 3339, or YYYY-MM-DD for local midnight. Default: 29 days before today.",
    )
    end = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Exclusive; RFC 3339, or YYYY-MM-DD for local midnight. Default: the end of today.",
    )
    tenant = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Tenant slug, with its descendants."
    )


class CostQueryParametersSerializer(CostRangeParametersSerializer):
    """The query parameters of /api/v1/costs/ (tag.<key>=<value> filters come on top)."""

    group_by = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Comma-separated: tenant, provider, model, status, tag.<key> (e.g. tenant,tag.feature,model). "
        "Tags other than `feature` are read from the raw records (at most 366 days per query).",
    )
    granularity = serializers.ChoiceField(
        choices=GRANULARITIES,
        required=False,
        default="day",
        help_text="Buckets of the time zone's calendar (weeks start on Monday); hour buckets are UTC "
        "hours; total: one bucket for the range.",
    )
    tz = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="IANA time zone of the buckets. Default: the filtered tenant's zone, else the key's "
        "tenant's zone, else UTC.",
    )
    provider = serializers.CharField(required=False, allow_blank=True, default="")
    model = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Normalised model id."
    )
    status = serializers.ChoiceField(
        choices=UsageStatus.choices, required=False, allow_blank=True, default=""
    )


class CostFiguresSerializer(serializers.Serializer):
    cost_usd = serializers.CharField(help_text="Charged cost, decimal USD (unpriced requests count 0).")
    list_cost_usd = serializers.CharField(help_text="Cost before the tenant's markup or discount.")
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True, help_text="errors / requests.")
    unpriced_requests = serializers.IntegerField()
    uncached_input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField(help_text="Cache reads.")
    cache_write_tokens = serializers.IntegerField()
    input_tokens = serializers.IntegerField(help_text="Uncached + cache read + cache write.")
    output_tokens = serializers.IntegerField(help_text="Whole output, reasoning included.")
    reasoning_tokens = serializers.IntegerField(help_text="Part of output_tokens.")
    total_tokens = serializers.IntegerField(help_text="input_tokens + output_tokens.")
    cost_per_1k_tokens_usd = serializers.CharField(allow_null=True)
    latency_average_ms = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(
        allow_null=True, help_text="Interpolated in the latency histogram, like histogram_quantile."
    )
    latency_p95_ms = serializers.FloatField(allow_null=True)


class CostRowSerializer(CostFiguresSerializer):
    period_start = serializers.DateTimeField(help_text="In the query's zone; buckets are [start, end).")
    period_end = serializers.DateTimeField()
    group = serializers.DictField(
        child=serializers.CharField(), help_text='The group\'s values, e.g. {"tenant": "search-team"}.'
    )


class CostResultSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    granularity = serializers.ChoiceField(choices=GRANULARITIES)
    time_zone = serializers.CharField()
    group_by = serializers.ListField(child=serializers.CharField())
    source = serializers.ChoiceField(choices=["rollups", "raw_records"])
    totals = CostFiguresSerializer()
    rows = CostRowSerializer(many=True)


ROW_COLUMNS = tuple(CostFiguresSerializer().fields)


class CostsCsvRenderer(BaseRenderer):
    """One line per row: period, group values, figures (the totals are not a line)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        output = io.StringIO()
        writer = csv.writer(output, lineterminator="\n")
        group_by = data.get("group_by", [])
        writer.writerow(["period_start", "period_end", *group_by, *ROW_COLUMNS])
        for row in data.get("rows", []):
            writer.writerow(
                [
                    row["period_start"],
                    row["period_end"],
                    *(row["group"].get(name, "") for name in group_by),
                    *("" if row[name] is None else row[name] for name in ROW_COLUMNS),
                ]
            )
        return output.getvalue().encode()


_BAD_QUERY = error_response(
    "A query that cannot be answered, with a stable code: validation_error, invalid_group_by, "
    "invalid_granularity, invalid_time_zone, invalid_range, too_many_buckets, too_many_rows, range_too_long."
)
_ERROR = error_response("Error with a stable code")


@extend_schema(
    tags=["costs"],
    summary="Cost, tokens, requests and latency by any dimensions and calendar buckets",
    description="Sums over the usage this key may see. Filters as on the usage list; any "
    "`tag.<key>=<value>` filters on that tag (an empty value: untagged). Buckets without usage are "
    "omitted. `format=csv` or `Accept: text/csv` answers CSV.",
    parameters=[
        CostQueryParametersSerializer,
        OpenApiParameter("tag.feature", OpenApiTypes.STR, description="Any tag: tag.<key>=<value>."),
        OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
    ],
    responses={
        (200, "application/json"): CostResultSerializer,
        (200, "text/csv"): OpenApiTypes.STR,
        400: _BAD_QUERY,
        401: _ERROR,
        403: _ERROR,
    },
)
class CostsApi(generics.GenericAPIView):
    permission_classes = [HasReadScope]
    renderer_classes = [JSONRenderer, CostsCsvRenderer]
    serializer_class = CostResultSerializer
    filter_backends = []
    pagination_class = None

    def get(self, request):
        try:
            result = costs_for_parameters(request.query_params, principal=request.auth)
        except CostQueryError as error:
            raise ApiError(error.message, code=error.code) from error
        response = Response(cost_result_as_dict(result))
        if request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = 'attachment; filename="costs.csv"'
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # Errors are always JSON, even when CSV was asked for: a CSV of an error helps nobody.
        if response.status_code >= 400 and isinstance(response, Response):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = "application/json"
        return response


def costs_for_parameters(query_params, *, principal) -> CostResult:
    """Validate the costs API's query parameters and run the query for this principal: the one
    path shared by the API and the pages' CSV. Raises ValidationError or CostQueryError."""
    parameters = CostQueryParametersSerializer(data=query_params)
    parameters.is_valid(raise_exception=True)
    tags = {}
    for name, value in query_params.items():
        if name.startswith("tag."):
            match = TAG_PARAMETER.match(name)
            if not match:
                raise ValidationError({name: "Tag keys are 1-64 letters, digits or _ . : -"})
            tags[match.group(1)] = value
    values = parameters.validated_data
    return costs_query(
        cost_query_for(
            principal=principal,
            now=timezone.now(),
            start=values["start"],
            end=values["end"],
            granularity=values["granularity"],
            time_zone=values["tz"],
            group_by=values["group_by"],
            tenant=values["tenant"],
            provider=values["provider"],
            model=values["model"],
            status=values["status"],
            tags=tags,
        )
    )
