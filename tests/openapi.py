"""The service's OpenAPI schema for tests, and a check that a response is what the schema promises."""

import functools
import json

import requests
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer


@functools.cache
def openapi_document() -> dict:
    """The schema exactly as /api/schema/?format=json serves it, generated without a request."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document))


@functools.cache
def openapi_schema():
    """The schema loaded by schemathesis (for generation and validation)."""
    return schemathesis.openapi.from_dict(openapi_document())


def assert_conforms_to_schema(response, label: str) -> None:
    """`response` (from Django's test client) has a status code and a content type that operation
    `label` ("GET /api/v1/statements/{id}/") documents, and a body that matches the schema for them."""
    operation = openapi_schema().find_operation_by_label(label)
    assert operation is not None, f"no operation {label} in the schema"
    definition = operation.responses.find_by_status_code(response.status_code)
    assert definition is not None, (
        f"{label} answered {response.status_code}, which the schema does not document"
    )
    headers = {name.lower(): [value] for name, value in response.items()}
    converted = schemathesis.Response(
        status_code=response.status_code,
        headers=headers,
        content=response.content,
        request=requests.Request(operation.method.upper(), "http://testserver/").prepare(),
        elapsed=0.0,
        verify=True,
    )
    documented = openapi_schema().get_content_types(operation, converted)
    content_type = response.get("Content-Type", "").split(";")[0].strip()
    assert not documented or content_type in {media.split(";")[0] for media in documented}, (
        f"{label} answered {response.status_code} as {content_type!r}; the schema documents {documented}"
    )
    operation.validate_response(converted)
