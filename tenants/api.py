from drf_spectacular.utils import extend_schema
from rest_framework import generics

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
