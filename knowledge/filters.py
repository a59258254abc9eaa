"""Metadata filters to SQL: ``{"author": "ann", "year": {"$gte": 2020}, "a.b": {"$in": [1, 2]}}``.

Why and how: docs/architecture.md, "knowledge/filters.py".
"""

from __future__ import annotations

import json
import re
from typing import Any

from core.errors import ApplicationError

_COMPARISONS = {"$gte": ">=", "$lte": "<=", "$gt": ">", "$lt": "<"}
# ASCII digits only (Python's \d also takes other scripts' digits); the schema states the same.
ISO_DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+(Z|[+-][0-9]{2}:?[0-9]{2})?)?$"
_ISO_DATE = re.compile(ISO_DATE_PATTERN)


def _invalid(message: str, path: list[str]) -> ApplicationError:
    return ApplicationError(
        message,
        code="invalid_metadata_filter",
        details={"metadata_filter": {".".join(path) or "(root)": [message]}},
    )


def _nest(path: list[str], value: Any) -> str:
    for key in reversed(path):
        value = {key: value}
    return json.dumps(value)


def _conditions(node: dict[str, Any], prefix: list[str], column: str) -> tuple[list[str], list]:
    sql: list[str] = []
    params: list[Any] = []
    for raw_key, value in node.items():
        if not isinstance(raw_key, str) or not raw_key or raw_key.startswith("$"):
            raise _invalid(f"Unexpected key {raw_key!r} here.", prefix)
        path = [*prefix, *raw_key.split(".")]
        if isinstance(value, dict) and value and all(k.startswith("$") for k in value):
            for operator, operand in value.items():
                clause, clause_params = _operator(operator, operand, path, column)
                sql.append(clause)
                params.extend(clause_params)
        elif isinstance(value, dict) and value:
            nested_sql, nested_params = _conditions(value, path, column)
            sql.extend(nested_sql)
            params.extend(nested_params)
        else:
            clause, clause_params = _contains(path, value, column)
            sql.append(clause)
            params.extend(clause_params)
    return sql, params


def _contains(path: list[str], value: Any, column: str) -> tuple[str, list]:
    """The value at ``path`` is ``value``, or an array that contains it (each form an
    ``@>`` the GIN index serves; PostgreSQL ORs their bitmap scans)."""
    forms = [_nest(path, value), _nest(path, [value])]
    return f"({column} @> %s::jsonb OR {column} @> %s::jsonb)", forms


def _operator(operator: str, operand: Any, path: list[str], column: str) -> tuple[str, list]:
    if operator == "$in":
        if not isinstance(operand, list) or not operand:
            raise _invalid("$in takes a non-empty list.", path)
        clauses, params = [], []
        for item in operand:
            clause, clause_params = _contains(path, item, column)
            clauses.append(clause)
            params.extend(clause_params)
        return f"({' OR '.join(clauses)})", params
    if operator in _COMPARISONS:
        symbol = _COMPARISONS[operator]
        if isinstance(operand, bool) or not isinstance(operand, int | float | str):
            raise _invalid(f"{operator} takes a number or an ISO date.", path)
        if isinstance(operand, str):
            if not _ISO_DATE.match(operand):
                raise _invalid(f"{operator} takes a number or an ISO date (YYYY-MM-DD).", path)
            # ISO dates order as text in the C collation.
            return (
                f"(CASE WHEN jsonb_typeof({column} #> %s::text[]) = 'string' "
                f'THEN {column} #>> %s::text[] END) COLLATE "C" {symbol} %s',
                [path, path, operand],
            )
        return (
            f"(CASE WHEN jsonb_typeof({column} #> %s::text[]) = 'number' "
            f"THEN ({column} #>> %s::text[])::numeric END) {symbol} %s",
            [path, path, operand],
        )
    raise _invalid(f"Unknown operator {operator!r}: use $in, $gte, $lte, $gt or $lt.", path)


def metadata_filter_sql(metadata_filter: dict[str, Any] | None, column: str) -> tuple[str, list]:
    """A SQL condition (``TRUE`` when empty) and its parameters, on a jsonb ``column``."""
    if not metadata_filter:
        return "TRUE", []
    if not isinstance(metadata_filter, dict):
        raise _invalid("metadata_filter must be an object.", [])
    sql, params = _conditions(metadata_filter, [], column)
    return " AND ".join(f"({clause})" for clause in sql) or "TRUE", params
