import re

import msgspec
import pytest
from django.urls import URLResolver, get_resolver

from chargeback.serializers import UsageRecordIngestSerializer
from chargeback.usage_input import UsageRecordIn


def test_the_documented_record_format_is_the_validated_one():
    assert set(UsageRecordIngestSerializer().fields) == {
        field.name for field in msgspec.structs.fields(UsageRecordIn)
    }


@pytest.mark.django_db
def test_the_schema_and_docs_are_served_offline(client):
    schema = client.get("/api/schema/?format=json").json()
    assert {"/api/v1/usage/", "/api/v1/tenants/", "/api/v1/tenants/{slug}/", "/healthz"} <= set(
        schema["paths"]
    )
    ingest = schema["paths"]["/api/v1/usage/"]["post"]
    assert {"200", "400", "401", "403", "413", "415", "422"} <= set(ingest["responses"])
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs
    assert "cdn" not in docs.lower()


def _routes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        else:
            # drf-spectacular names a primary key parameter {id}
            yield "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route).replace("{pk}", "{id}")


@pytest.mark.django_db
def test_every_api_url_is_in_the_schema(client):
    paths = set(client.get("/api/schema/?format=json").json()["paths"])
    api_routes = {route for route in _routes(get_resolver().url_patterns) if route.startswith("/api/v1/")}
    assert api_routes
    assert api_routes <= paths
