"""One JSON error shape for everything under /api/: {"error": {"code", "message", "details"}}.

Codes are stable; clients may branch on them. Messages are for people.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A backing service is unavailable; retry shortly."
    default_code = "service_unavailable"


class ApiError(exceptions.APIException):
    """A 400 with a specific, stable code chosen by the raiser."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "bad_request"

    def __init__(self, message: str, *, code: str, details=None, status_code: int | None = None):
        super().__init__(message, code)
        self.error_code = code
        self.details = details
        if status_code is not None:
            self.status_code = status_code


# DRF's own codes, renamed where a clearer stable name helps clients.
_CODE_BY_EXCEPTION = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "parse_error",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "validation_error",
}


def error_body(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


def _first_message(detail) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        return f"{key}: {_first_message(value)}"
    return str(detail)


def api_exception_handler(exc, context):
    """DRF exception handler producing the error shape; unexpected errors become a logged 500."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()

    if isinstance(exc, ApiError):
        body = error_body(exc.error_code, str(exc.detail), exc.details)
        return Response(body, status=exc.status_code)
    if isinstance(exc, exceptions.APIException):
        code = _CODE_BY_EXCEPTION.get(type(exc))
        if code is None:
            codes = exc.get_codes()
            code = codes if isinstance(codes, str) else exc.default_code
        if isinstance(exc, exceptions.ValidationError):
            body = error_body(code, "The request is invalid: " + _first_message(exc.detail), exc.detail)
        else:
            body = error_body(code, _first_message(exc.detail))
        response = Response(body, status=exc.status_code)
        if getattr(exc, "wait", None):
            response["Retry-After"] = str(int(exc.wait))
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        return response

    logger.exception("Unhandled error in %s", context.get("view").__class__.__name__ if context else "?")
    return Response(
        error_body("internal_error", "An unexpected error occurred; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def _is_api_path(request) -> bool:
    return request.path.startswith(("/api/", "/v1/"))


def json_not_found(request, exception=None):
    if not _is_api_path(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse(error_body("not_found", f"No endpoint at {request.path}."), status=404)


def json_server_error(request):
    if not _is_api_path(request):
        return defaults.server_error(request)
    return JsonResponse(
        error_body("internal_error", "An unexpected error occurred; it has been logged."), status=500
    )


def json_bad_request(request, exception=None):
    if not _is_api_path(request):
        return defaults.bad_request(request, exception)
    return JsonResponse(error_body("bad_request", "The request could not be understood."), status=400)


def json_permission_denied(request, exception=None):
    if not _is_api_path(request):
        return defaults.permission_denied(request, exception)
    return JsonResponse(error_body("permission_denied", "You may not access this resource."), status=403)
