import re

import msgspec
import pytest
from django.urls import URLResolver, get_resolver

from chargeback.serializers import UsageRecordIngestSerializer
from chargeback.usage_input import UsageRecordIn
from tests.openapi import openapi_document


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


def test_every_operation_documents_its_error_responses():
    """Errors are part of the contract: each operation documents, with the one error shape, the
    errors any request can get (401/403 where a key is needed, 404 with a path parameter, 400 with
    parameters or a body, 413 and 415 with a body)."""
    document = openapi_document()
    error_schema = document["components"]["schemas"]["Error"]
    assert error_schema["required"] == ["error"]
    detail_schema = document["components"]["schemas"][
        error_schema["properties"]["error"]["$ref"].split("/")[-1]
    ]
    assert set(detail_schema["required"]) == {"code", "message", "details"}
    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parameters = {parameter["in"] for parameter in operation.get("parameters", [])}
            expected = set()
            if operation.get("security") and {} not in operation["security"]:
                expected |= {"401", "403"}
            if "path" in parameters:
                expected.add("404")
            if "query" in parameters or "requestBody" in operation:
                expected.add("400")
            if "requestBody" in operation:
                expected |= {"413", "415"}
            for code in sorted(expected):
                response = operation["responses"].get(code)
                if response is None or "application/json" not in response.get("content", {}):
                    missing.append(f"{method.upper()} {path} {code}")
    assert not missing, "undocumented error responses: " + ", ".join(missing)


def test_every_documented_error_has_the_error_shape():
    """A documented 4xx says what its body is: the one error shape (the OTLP receiver answers as
    OTLP/HTTP requires, with a google.rpc.Status)."""
    document = openapi_document()
    schemas = document["components"]["schemas"]

    def is_error_shape(schema):
        if "$ref" in schema:
            schema = schemas[schema["$ref"].split("/")[-1]]
        error = schema.get("properties", {}).get("error", {})
        if "$ref" in error:
            error = schemas[error["$ref"].split("/")[-1]]
        return {"code", "message", "details"} <= set(error.get("properties", {}))

    wrong = []
    for path, operations in document["paths"].items():
        if path == "/v1/traces":
            continue
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if not code.startswith("4"):
                    continue
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is None or not is_error_shape(schema):
                    wrong.append(f"{method.upper()} {path} {code}")
    assert not wrong, "error responses without the error shape: " + ", ".join(wrong)
