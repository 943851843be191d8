"""Request body limits for every endpoint.

Django checks DATA_UPLOAD_MAX_MEMORY_SIZE only where it parses forms itself, and DRF reads JSON
bodies straight from the stream, so without this a JSON endpoint would read any body it is sent.
Under WSGI the body is exactly Content-Length bytes (a request without one has no body), so that
header decides before anything is read. Views that bound their own bodies with larger limits (the
ingestion endpoints, gzip included) declare it with `bounds_own_request_body = True`.
"""

from django.conf import settings
from django.http import HttpResponse, JsonResponse

from chargeback.errors import error_body, is_api_path


def request_body_too_large(request, declared: int, limit: int) -> HttpResponse:
    message = f"The request body is {declared} bytes; the limit is {limit}."
    if is_api_path(request):
        return JsonResponse(error_body("payload_too_large", message), status=413)
    return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")


class RequestBodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is None or getattr(getattr(view_func, "cls", None), "bounds_own_request_body", False):
            return None
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return request_body_too_large(request, declared, limit)
        return None
