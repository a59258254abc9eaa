"""Lists: page numbers in v1 (`count`, `next`, `previous`, `results`), cursors in v2
(`next`, `previous`, `results`: stable under inserts, no COUNT over big tables)."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models import ForeignKey
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, CursorPagination, PageNumberPagination
from rest_framework.response import Response

from web.versioning import api_version


def _is_value_field(model: Any, name: str) -> bool:
    try:
        return not isinstance(model._meta.get_field(name), ForeignKey)
    except FieldDoesNotExist:
        return False


class ChatterCursorPagination(CursorPagination):
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_ordering(self, request: Any, queryset: Any, view: Any) -> tuple[str, ...]:
        # The view's own order (or the model's), without relations: a cursor needs values.
        ordering = getattr(view, "cursor_ordering", None)
        if not ordering:
            model = queryset.model
            ordering = [
                name
                for name in (queryset.query.order_by or model._meta.ordering)
                if isinstance(name, str) and _is_value_field(model, name.lstrip("-"))
            ] or ["-pk"]
        return tuple(ordering)


_PAGE_NUMBER = re.compile(r"^[1-9][0-9]{0,8}$")


class StrictPageNumberPagination(PageNumberPagination):
    """DRF's page numbers, with what the schema declares enforced: ``page`` is an integer
    from 1. DRF reads an empty ``page=`` as page 1 and answers 404 to ``page=abc``; both
    are malformed requests (400), while a page past the end stays a 404."""

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> Any:
        values = request.query_params.getlist(self.page_query_param)
        if values and (len(values) > 1 or not _PAGE_NUMBER.match(values[0])):
            raise ValidationError({self.page_query_param: ["A page number: an integer from 1."]})
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": 999_999_999}
        return parameters


class VersionedPagination(BasePagination):
    """Delegates to page-number pagination (v1) or cursor pagination (v2)."""

    def __init__(self) -> None:
        self.pages = StrictPageNumberPagination()
        self.cursors = ChatterCursorPagination()
        self.delegate: BasePagination = self.pages

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> Any:
        self.delegate = self.cursors if api_version(request) == "2" else self.pages
        return self.delegate.paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data: Any) -> Response:
        return self.delegate.get_paginated_response(data)

    def get_paginated_response_schema(self, schema: Any) -> Any:
        return self.pages.get_paginated_response_schema(schema)

    def get_schema_operation_parameters(self, view: Any) -> Any:
        return self.pages.get_schema_operation_parameters(view)
