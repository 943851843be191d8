from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from chargeback.health import service_health

_CheckSerializer = inline_serializer(
    "HealthCheck",
    {
        "ok": serializers.BooleanField(),
        "vendor": serializers.CharField(required=False),
        "transport": serializers.CharField(required=False),
        "error": serializers.CharField(required=False),
    },
)


@extend_schema(
    tags=["health"],
    summary="Database and broker status (503 when the database is down)",
    auth=[],
    responses={
        (200, "application/json"): inline_serializer(
            "Health",
            {"status": serializers.CharField(), "database": _CheckSerializer, "broker": _CheckSerializer},
        ),
        (503, "application/json"): inline_serializer(
            "HealthDown",
            {"status": serializers.CharField(), "database": _CheckSerializer, "broker": _CheckSerializer},
        ),
    },
)
class HealthApi(generics.GenericAPIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request):
        health = service_health()
        # Only the database is fatal: ingestion keeps working while the broker is away.
        code = status.HTTP_200_OK if health["database"]["ok"] else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(health, status=code)
