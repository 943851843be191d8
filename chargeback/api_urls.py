from django.urls import path

from chargeback.usage_api import UsageApi

urlpatterns = [
    path("usage/", UsageApi.as_view(), name="usage"),
]
