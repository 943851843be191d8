"""One JSON error shape for everything under /api/: {"error": {"code", "message", "details"}}.

Codes are stable; clients may branch on them. Messages are for people.
"""

import logging
import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, InterfaceError, OperationalError
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


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (down, restarting, connection cut) or asks for a retry
    (deadlock, serialization failure): a retry is the client's move, so a 503 that says so, not a 500."""

    default_detail = "The database is unavailable; retry shortly."
    default_code = "database_unavailable"
    wait = 5  # seconds, as Retry-After: a restart or failover takes a few


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
    exceptions.Throttled: "rate_limited",
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


# Django's own field-level codes: too generic to name a whole request's error.
_GENERIC_DJANGO_CODES = {
    None, "invalid", "required", "null", "blank", "unique", "unique_together", "max_length", "min_length",
    "max_value", "min_value", "invalid_choice", "max_digits", "max_decimal_places", "max_whole_digits",
    "constraint_violated",
}  # fmt: skip


def _validation_error_from_django(error: DjangoValidationError) -> ApiError:
    """A model or service ValidationError (full_clean, a service's own check) is bad input: a 400
    with the error's own code when it has exactly one specific code, else `validation_error`."""
    if hasattr(error, "error_dict"):
        details = error.message_dict
        codes = {item.code for items in error.error_dict.values() for item in items}
    else:
        details = {"non_field_errors": error.messages}
        codes = {item.code for item in error.error_list}
    code = next(iter(codes)) if len(codes) == 1 and not codes & _GENERIC_DJANGO_CODES else "validation_error"
    return ApiError("The request is invalid: " + _first_message(details), code=code, details=details)


def api_exception_handler(exc, context):
    """DRF exception handler producing the error shape; unexpected errors become a logged 500."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, DjangoValidationError):
        exc = _validation_error_from_django(exc)
    elif isinstance(exc, DataError):
        # A value the database cannot store or compare (a NUL character in PostgreSQL text, a
        # number out of a column's range) got past validation: still bad input, not a 500.
        logger.warning("Database refused a value in %s: %s", _view_name(context), str(exc).strip()[:300])
        exc = ApiError(
            "A value in the request is not one the database accepts (a NUL character, or a number "
            "out of range).",
            code="invalid_value",
        )
    elif isinstance(exc, OperationalError | InterfaceError):
        logger.warning("Database unavailable in %s: %s", _view_name(context), str(exc).strip()[:300])
        exc = DatabaseUnavailable()

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
        elif isinstance(exc, exceptions.Throttled):
            retry = f"retry in {math.ceil(exc.wait)} s" if exc.wait is not None else "retry later"
            body = error_body(code, f"Too many requests with this API key; {retry}.")
        else:
            body = error_body(code, _first_message(exc.detail))
        response = Response(body, status=exc.status_code)
        if getattr(exc, "wait", None):
            response["Retry-After"] = str(math.ceil(exc.wait))
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        return response

    logger.exception("Unhandled error in %s", _view_name(context))
    return Response(
        error_body("internal_error", "An unexpected error occurred; it has been logged."),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def _view_name(context) -> str:
    return context.get("view").__class__.__name__ if context else "?"


def is_api_path(request) -> bool:
    """Paths whose errors are JSON (the API and the OTLP receiver), not HTML pages."""
    return request.path.startswith(("/api/", "/v1/"))


def json_not_found(request, exception=None):
    if not is_api_path(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse(error_body("not_found", f"No endpoint at {request.path}."), status=404)


def json_server_error(request):
    if not is_api_path(request):
        return defaults.server_error(request)
    return JsonResponse(
        error_body("internal_error", "An unexpected error occurred; it has been logged."), status=500
    )


def json_bad_request(request, exception=None):
    if not is_api_path(request):
        return defaults.bad_request(request, exception)
    return JsonResponse(error_body("bad_request", "The request could not be understood."), status=400)


def json_permission_denied(request, exception=None):
    if not is_api_path(request):
        return defaults.permission_denied(request, exception)
    return JsonResponse(error_body("permission_denied", "You may not access this resource."), status=403)
