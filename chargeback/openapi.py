"""The OpenAPI schema's view of errors: every operation documents the errors any request to it can
get, in the one error shape of `chargeback.errors`, so that the schema is honest about them.

Views document their own specific answers (409 `statement_state`, 422 on ingestion, ...) in
`@extend_schema(responses=...)`; what every operation of a kind shares is added here, once:

- 401 and 403 where a key is needed (no or a bad key; a key without the scope),
- 404 where the path names an object (none, or outside the key's tenants),
- 400 where there are query parameters or a body (invalid values),
- 413 and 415 where there is a body (too large; a Content-Type the operation does not parse),
- 429 where the view is rate limited.

A view's own description of one of these codes wins.
"""

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable; clients may branch on it.")
    message = serializers.CharField(help_text="For people: what went wrong and what to do.")
    details = serializers.JSONField(allow_null=True, help_text="Per-field or per-record details, or null.")


class ErrorSerializer(serializers.Serializer):
    """{"error": {"code", "message", "details"}}: every error under /api/ and /v1/."""

    error = ErrorDetailSerializer()

    class Meta:
        ref_name = "Error"


def error_response(description: str) -> OpenApiResponse:
    """For a view's own error answers: `@extend_schema(responses={409: error_response("...")})`."""
    return OpenApiResponse(ErrorSerializer, description=description)


_DESCRIPTIONS = {
    "400": "Invalid parameters or body (code `validation_error`, `parse_error`, or a specific one).",
    "401": "No, a malformed or a revoked API key (codes `not_authenticated`, `authentication_failed`).",
    "403": "The API key lacks the scope this operation needs (code `scope_missing`).",
    "404": "No such object, or one outside the API key's tenants (code `not_found`).",
    "413": "The body is larger than this operation accepts (code `payload_too_large`).",
    "415": "The body's Content-Type is not one this operation reads (code `unsupported_media_type`).",
    "429": "Too many requests with this API key (code `rate_limited`, with Retry-After).",
}


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        codes = self._error_codes(operation)
        if not codes:
            return operation
        error = self.resolve_serializer(ErrorSerializer, "response").ref
        responses = operation.setdefault("responses", {})
        for code in codes:
            response = responses.setdefault(code, {"description": _DESCRIPTIONS[code]})
            response.setdefault("content", {"application/json": {"schema": error}})
            response["description"] = response.get("description") or _DESCRIPTIONS[code]
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_codes(self, operation: dict) -> list[str]:
        locations = {parameter["in"] for parameter in operation.get("parameters", [])}
        codes = []
        if "query" in locations or "requestBody" in operation:
            codes.append("400")
        security = operation.get("security")
        if security and {} not in security:
            codes += ["401", "403"]
        if "path" in locations:
            codes.append("404")
        if "requestBody" in operation:
            codes += ["413", "415"]
        if self.view.get_throttles():
            codes.append("429")
        return codes
