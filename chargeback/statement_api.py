import re

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.response import Response

from chargeback.errors import ApiError
from chargeback.filters import StatementFilterSet
from chargeback.models import Statement
from chargeback.openapi import error_response
from chargeback.selectors import statement_list
from chargeback.serializers import StatementDetailSerializer, StatementSerializer, StatementVoidSerializer
from chargeback.services import StatementError, statement_finalize, statement_void
from tenants.permissions import HasAdminScope, HasReadScope

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class _StatementScoped:
    def get_queryset(self):
        return statement_list(principal=self.request.auth)


@extend_schema(tags=["statements"], summary="Statements of the tenants this key may see")
class StatementListApi(_StatementScoped, generics.ListAPIView):
    serializer_class = StatementSerializer
    permission_classes = [HasReadScope]
    filterset_class = StatementFilterSet


@extend_schema(tags=["statements"], summary="One statement with its lines")
class StatementDetailApi(_StatementScoped, generics.RetrieveAPIView):
    serializer_class = StatementDetailSerializer
    permission_classes = [HasReadScope]

    def get_queryset(self):
        return super().get_queryset().prefetch_related("lines")


@extend_schema(
    tags=["statements"],
    summary="The statement as PDF (the stored document once finalized)",
    responses={(200, "application/pdf"): OpenApiTypes.BINARY},
)
class StatementPdfApi(_StatementScoped, generics.GenericAPIView):
    permission_classes = [HasReadScope]
    serializer_class = StatementSerializer

    def get(self, request, pk):
        from chargeback.statement_documents import statement_pdf_render

        statement = self.get_object()
        pdf = bytes(statement.pdf) if statement.pdf else statement_pdf_render(statement)
        response = HttpResponse(pdf, content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{_filename(statement)}.pdf"'
        return response


@extend_schema(
    tags=["statements"],
    summary="The statement's lines as CSV",
    responses={(200, "text/csv"): OpenApiTypes.STR},
)
class StatementCsvApi(_StatementScoped, generics.GenericAPIView):
    permission_classes = [HasReadScope]
    serializer_class = StatementSerializer

    def get(self, request, pk):
        from chargeback.statement_documents import statement_csv

        statement = self.get_object()
        response = HttpResponse(statement_csv(statement), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{_filename(statement)}.csv"'
        return response


def _filename(statement: Statement) -> str:
    return statement.number or f"draft-{statement.tenant.slug}-{statement.period_key}"


_STATE_ERROR = error_response("Not allowed in the statement's state (code `statement_state`).")


@extend_schema(
    tags=["statements"],
    summary="Finalize: number, freeze and store the PDF (scope admin)",
    request=None,
    responses={200: StatementDetailSerializer, 409: _STATE_ERROR},
)
class StatementFinalizeApi(_StatementScoped, generics.GenericAPIView):
    permission_classes = [HasAdminScope]
    serializer_class = StatementDetailSerializer

    def post(self, request, pk):
        statement = self.get_object()
        try:
            statement = statement_finalize(statement_id=statement.pk, actor=request.auth)
        except StatementError as error:
            raise ApiError(str(error), code="statement_state", status_code=409) from error
        return Response(self.get_serializer(statement).data)


@extend_schema(
    tags=["statements"],
    summary="Void a finalized statement; it keeps its number and document (scope admin)",
    request=StatementVoidSerializer,
    responses={200: StatementDetailSerializer, 409: _STATE_ERROR},
)
class StatementVoidApi(_StatementScoped, generics.GenericAPIView):
    permission_classes = [HasAdminScope]
    serializer_class = StatementDetailSerializer

    def post(self, request, pk):
        statement = self.get_object()
        body = StatementVoidSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            statement = statement_void(
                statement_id=statement.pk, reason=body.validated_data["reason"], actor=request.auth
            )
        except StatementError as error:
            raise ApiError(str(error), code="statement_state", status_code=409) from error
        return Response(self.get_serializer(statement).data)


@extend_schema(
    tags=["statements"],
    summary="FOCUS 1.2 CSV of the month's statements this key may see",
    parameters=[OpenApiParameter("period", OpenApiTypes.STR, required=True, description="YYYY-MM")],
    responses={(200, "text/csv"): OpenApiTypes.STR},
)
class FocusExportApi(_StatementScoped, generics.GenericAPIView):
    permission_classes = [HasReadScope]
    serializer_class = StatementSerializer

    def get(self, request):
        from chargeback.statement_documents import focus_csv

        period = request.query_params.get("period", "")
        if not _PERIOD.match(period):
            raise ApiError(
                "Give the month as period=YYYY-MM.", code="validation_error", details={"period": period}
            )
        statements = (
            self.get_queryset()
            .filter(period_key=period)
            .exclude(status=Statement.Status.VOID)
            .prefetch_related("lines")
            .order_by("tenant__slug")
        )
        response = StreamingHttpResponse(focus_csv(statements), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="focus-{period}.csv"'
        return response
