from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.response import Response

from tenants.filters import TenantFilterSet
from tenants.permissions import HasReadScope
from tenants.selectors import tenant_list
from tenants.serializers import TenantSerializer


@extend_schema(tags=["tenants"], summary="Tenants this key may see")
class TenantListApi(generics.ListAPIView):
    serializer_class = TenantSerializer
    permission_classes = [HasReadScope]
    filterset_class = TenantFilterSet

    def get_queryset(self):
        return tenant_list(principal=self.request.auth)


@extend_schema(tags=["tenants"], summary="One tenant, by slug")
class TenantDetailApi(generics.RetrieveAPIView):
    serializer_class = TenantSerializer
    permission_classes = [HasReadScope]
    lookup_field = "slug"

    def get_queryset(self):
        return tenant_list(principal=self.request.auth)


@extend_schema(
    tags=["tenants"],
    summary="The calling key: prefix, tenant and scopes (to check a key)",
    responses=inline_serializer(
        "WhoAmI",
        {
            "prefix": serializers.CharField(),
            "name": serializers.CharField(),
            "tenant": serializers.CharField(allow_null=True),
            "scopes": serializers.ListField(child=serializers.CharField()),
        },
    ),
)
class WhoAmIApi(generics.GenericAPIView):
    def get(self, request):
        api_key = request.auth
        tenant = api_key.tenant.slug if api_key.tenant_id else None
        return Response(
            {"prefix": api_key.prefix, "name": api_key.name, "tenant": tenant, "scopes": api_key.scopes}
        )
