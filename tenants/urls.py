from django.urls import path

from tenants.api import TenantDetailApi, TenantListApi, WhoAmIApi

urlpatterns = [
    path("tenants/", TenantListApi.as_view(), name="tenant-list"),
    path("tenants/<slug:slug>/", TenantDetailApi.as_view(), name="tenant-detail"),
    path("whoami/", WhoAmIApi.as_view(), name="whoami"),
]
