"""Cost optimisation over HTTP: thin views on insights.optimisation_selectors, scoped to the tenants
the key may see (scope read). Routing policies themselves are written through budgets' API."""

from datetime import timedelta

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.response import Response

from budgets.routing_selectors import routing_policy_list
from chargeback.costs import CostQueryError
from chargeback.errors import ApiError
from chargeback.openapi import error_response
from insights.optimisation_documents import savings_report_csv, savings_report_pdf
from insights.optimisation_selectors import (
    OptimisationError,
    OptimisationScope,
    caching_report,
    costliest_request_types,
    model_what_if,
    optimisation_scope_for,
    routing_policy_report,
    savings_report,
)
from insights.optimisation_serializers import (
    CachingParametersSerializer,
    CachingReportSerializer,
    CostliestReportSerializer,
    OptimisationParametersSerializer,
    RoutingPolicyReportSerializer,
    SavingsReportSerializer,
    WhatIfParametersSerializer,
    WhatIfReportSerializer,
)
from tenants.permissions import HasReadScope
from tenants.scoping import visible_tenant_ids

_BAD_QUERY = error_response(
    "A query that cannot be answered, with a stable code: validation_error, invalid_range, "
    "invalid_time_zone, too_many_rows, range_too_long, missing_model, unpriced_model."
)


def scope_from_request(
    request, parameters_class=OptimisationParametersSerializer
) -> tuple[OptimisationScope, dict]:
    """The validated parameters and the scope they name, for the request's key (or user)."""
    parameters = parameters_class(data=request.query_params)
    parameters.is_valid(raise_exception=True)
    values = parameters.validated_data
    try:
        scope = optimisation_scope_for(
            principal=request.auth if request.auth is not None else request.user,
            now=timezone.now(),
            start=values["start"],
            end=values["end"],
            tenant=values["tenant"],
            feature=values.get("feature"),
        )
    except CostQueryError as error:
        raise ApiError(error.message, code=error.code) from error
    return scope, values


class _OptimisationApi(generics.GenericAPIView):
    permission_classes = [HasReadScope]
    filter_backends = []
    pagination_class = None

    def answer(self, build):
        try:
            return build()
        except CostQueryError as error:
            raise ApiError(error.message, code=error.code) from error
        except OptimisationError as error:
            raise ApiError(error.message, code=error.code) from error


@extend_schema(
    tags=["optimisation"],
    summary="Costliest request types: list cost by feature x model x prompt template, with trend",
    parameters=[OptimisationParametersSerializer],
    responses={200: CostliestReportSerializer, 400: _BAD_QUERY},
)
class CostliestApi(_OptimisationApi):
    serializer_class = CostliestReportSerializer

    def get(self, request):
        scope, _ = scope_from_request(request)
        return self.answer(lambda: Response(self.get_serializer(costliest_request_types(scope)).data))


@extend_schema(
    tags=["optimisation"],
    summary="Caching opportunities: repeated prompts (exact-match cache) and provider prompt caching",
    parameters=[CachingParametersSerializer],
    responses={200: CachingReportSerializer, 400: _BAD_QUERY},
)
class CachingApi(_OptimisationApi):
    serializer_class = CachingReportSerializer

    def get(self, request):
        scope, values = scope_from_request(request, CachingParametersSerializer)
        ttl = values["cache_ttl_seconds"]
        return self.answer(
            lambda: Response(
                self.get_serializer(
                    caching_report(
                        scope,
                        ttl=None if ttl is None else timedelta(seconds=ttl),
                        target_cached_share=values["target_cached_share"],
                    )
                ).data
            )
        )


@extend_schema(
    tags=["optimisation"],
    summary="What if this usage had run on another model? Re-priced with the price book",
    parameters=[WhatIfParametersSerializer],
    responses={200: WhatIfReportSerializer, 400: _BAD_QUERY},
)
class WhatIfApi(_OptimisationApi):
    serializer_class = WhatIfReportSerializer

    def get(self, request):
        scope, values = scope_from_request(request, WhatIfParametersSerializer)
        return self.answer(
            lambda: Response(
                self.get_serializer(
                    model_what_if(
                        scope,
                        model=values["model"],
                        provider=values["provider"],
                        source_model=values["source_model"],
                    )
                ).data
            )
        )


def _savings(request):
    scope, _ = scope_from_request(request)
    try:
        return savings_report(scope)
    except (CostQueryError, OptimisationError) as error:
        raise ApiError(error.message, code=error.code) from error


@extend_schema(
    tags=["optimisation"],
    summary="Savings report: every opportunity found, ranked by monthly savings",
    parameters=[OptimisationParametersSerializer],
    responses={200: SavingsReportSerializer, 400: _BAD_QUERY},
)
class SavingsApi(_OptimisationApi):
    serializer_class = SavingsReportSerializer

    def get(self, request):
        return Response(self.get_serializer(_savings(request)).data)


@extend_schema(
    tags=["optimisation"],
    summary="The savings report as CSV",
    parameters=[OptimisationParametersSerializer],
    responses={(200, "text/csv"): OpenApiTypes.STR, 400: _BAD_QUERY},
)
class SavingsCsvApi(_OptimisationApi):
    serializer_class = SavingsReportSerializer

    def get(self, request):
        response = HttpResponse(savings_report_csv(_savings(request)), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="savings.csv"'
        return response


@extend_schema(
    tags=["optimisation"],
    summary="The savings report as PDF",
    parameters=[OptimisationParametersSerializer],
    responses={(200, "application/pdf"): OpenApiTypes.BINARY, 400: _BAD_QUERY},
)
class SavingsPdfApi(_OptimisationApi):
    serializer_class = SavingsReportSerializer

    def get(self, request):
        response = HttpResponse(savings_report_pdf(_savings(request)), content_type="application/pdf")
        response["Content-Disposition"] = 'inline; filename="savings.pdf"'
        return response


@extend_schema(
    tags=["routing policies"],
    summary="A routing policy's effect: cost per request before and after, and its A/B arms",
    responses={200: RoutingPolicyReportSerializer},
)
class RoutingPolicyReportApi(_OptimisationApi):
    serializer_class = RoutingPolicyReportSerializer

    def get_queryset(self):
        return routing_policy_list(principal=self.request.auth)

    def get(self, request, pk):
        policy = self.get_object()
        report = routing_policy_report(
            policy, visible_tenant_ids=visible_tenant_ids(request.auth), now=timezone.now()
        )
        return Response(self.get_serializer(report).data)
