"""Lists: page numbers in v1 (`count`, `next`, `previous`, `results`), cursors in v2
(`next`, `previous`, `results`: stable under inserts, no COUNT over big tables)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models import ForeignKey
from rest_framework.pagination import BasePagination, CursorPagination, PageNumberPagination
from rest_framework.response import Response

from chatter_project.versioning import api_version


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


class VersionedPagination(BasePagination):
    """Delegates to page-number pagination (v1) or cursor pagination (v2)."""

    def __init__(self) -> None:
        self.pages = PageNumberPagination()
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
