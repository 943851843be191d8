"""Pagination with a ceiling on the page size every list endpoint accepts."""

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import pagination
from rest_framework.exceptions import NotFound

from chargeback.errors import ApiError

_INVALID_CURSOR = "The cursor is invalid; use a page's `next` or `previous` link as it is."


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """?limit= and ?offset=; a limit above API_MAX_PAGE_SIZE is clamped to it (not refused), as DRF
    clamps page sizes, so a client asking for too much still gets pages and a `next` link."""

    limit_query_description = "Rows per page (default 100); above API_MAX_PAGE_SIZE (1000) it is clamped."

    @property
    def max_limit(self) -> int:
        return settings.API_MAX_PAGE_SIZE

    def get_limit(self, request) -> int:
        return min(super().get_limit(request), self.max_limit)


class CursorPagination(pagination.CursorPagination):
    """Cursor pages (stable under inserts) of `?page_size=` rows, clamped to API_MAX_PAGE_SIZE."""

    page_size = 100
    page_size_query_param = "page_size"
    page_size_query_description = "Rows per page (default 100); above API_MAX_PAGE_SIZE (1000) it is clamped."

    @property
    def max_page_size(self) -> int:
        return settings.API_MAX_PAGE_SIZE

    # DRF answers a cursor it cannot decode with 404 "Invalid cursor"; it is bad input, not a
    # missing object: 400 `invalid_cursor`. So is a forged position of the wrong type.
    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound as error:
            raise ApiError(_INVALID_CURSOR, code="invalid_cursor") from error

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except DjangoValidationError as error:
            if request.query_params.get(self.cursor_query_param) is None:
                raise
            raise ApiError(_INVALID_CURSOR, code="invalid_cursor") from error
