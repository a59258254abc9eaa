"""What an export holds: tables (a model and the queryset of its rows in the scope), found
from the models of every app, so models added later are exported without a change here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db import connection, models
from django.db.models import Count, Q, Sum
from django.db.models.functions import Cast, TruncDate

from accounts.models import User
from core.errors import ApplicationError, NotFound

# Apps whose models are the platform's own (django.contrib, django_q and the rest are
# infrastructure: only the full scope takes them).
PROJECT_APPS = (
    "accounts", "jobs", "knowledge", "agents", "conversations",
    "experiments", "webhooks", "plugins", "datamgmt",
)  # fmt: skip
OWNER_FIELDS = ("owner", "user", "actor", "created_by")
# Written as "!" (Django's unusable password) or null outside the full scope.
REDACTED = {"password": "!", "pending_key": None, "encryption_header": None}
# Operators' records of their own work: not part of what a user owns.
OPERATOR_RECORDS = ("datamgmt.Backup", "datamgmt.Restore")
CUSTOM_LOOKUPS = {
    "exact",
    "in",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "icontains",
    "isnull",
    "startswith",
}
MAX_CLOSURE_ROUNDS = 10


@dataclass
class Column:
    name: str
    kind: str  # int, float, bool, str, datetime, date, decimal, uuid, json, bytes, vector, duration
    nullable: bool = True
    field: models.Field | None = None


@dataclass
class ExportTable:
    name: str  # the table's name in the database (and in every format)
    columns: list[Column]
    model: type[models.Model] | None = None
    queryset: Any = None
    rows_fn: Any = None  # for computed tables: () -> iterator of tuples
    redact: bool = False
    redact_users_except: int | None = None
    count_hint: int | None = None

    def rows(self, chunk_size: int = 2000) -> Iterator[tuple[Any, ...]]:
        if self.rows_fn is not None:
            yield from self.rows_fn()
            return
        names = [c.field.attname for c in self.columns]  # type: ignore[union-attr]
        positions = {n: i for i, n in enumerate(names)}
        redact = {positions[n]: v for n, v in REDACTED.items() if n in positions}
        queryset, selected = self.queryset.order_by("pk"), list(names)
        for index, column in enumerate(self.columns):
            if column.kind == "str" and hasattr(column.field, "from_db_value"):
                # A text column the ORM turns into something else on reading (django-q2's
                # pickled arguments and results): exported as stored, which is what a
                # restore writes back.
                selected[index] = f"_stored_{column.field.attname}"  # type: ignore[union-attr]
                queryset = queryset.annotate(
                    **{selected[index]: Cast(names[index], output_field=models.TextField())}
                )
        for row in queryset.values_list(*selected).iterator(chunk_size=chunk_size):
            if self.redact and redact:
                row = tuple(redact.get(i, value) for i, value in enumerate(row))
            if (
                self.redact_users_except is not None
                and self.model is User
                and row[positions["id"]] != self.redact_users_except
            ):
                # Someone the exported rows refer to (a shared agent's owner, the staff member
                # who decided an approval): only what keeps the references loadable.
                row = tuple(
                    f"user-{row[positions['id']]}" if n == "username"
                    else "!" if n == "password"
                    else "" if isinstance(value, str)
                    else value
                    for n, value in zip(names, row, strict=True)
                )  # fmt: skip
            yield row

    def count(self) -> int:
        if self.count_hint is not None:
            return self.count_hint
        return self.queryset.count() if self.queryset is not None else 0


_KINDS = {
    "AutoField": "int", "BigAutoField": "int", "SmallAutoField": "int", "IntegerField": "int",
    "BigIntegerField": "int", "SmallIntegerField": "int", "PositiveIntegerField": "int",
    "PositiveBigIntegerField": "int", "PositiveSmallIntegerField": "int", "ForeignKey": "fk",
    "OneToOneField": "fk", "FloatField": "float", "BooleanField": "bool", "DateTimeField": "datetime",
    "DateField": "date", "DecimalField": "decimal", "UUIDField": "uuid", "JSONField": "json",
    "BinaryField": "bytes", "DurationField": "duration", "VectorField": "vector",
}  # fmt: skip


def field_kind(f: models.Field) -> str:
    kind = _KINDS.get(f.get_internal_type(), _KINDS.get(type(f).__name__, "str"))
    if kind == "fk":
        return field_kind(f.target_field)  # type: ignore[attr-defined]
    return kind


def model_columns(model: type[models.Model]) -> list[Column]:
    return [
        Column(f.attname if f.is_relation else f.column, field_kind(f), f.null, f)
        for f in model._meta.concrete_fields
        if not isinstance(f, models.GeneratedField)
    ]


def model_table(model: type[models.Model], queryset: Any, *, redact: bool) -> ExportTable:
    columns = model_columns(model)
    for column in columns:
        column.name = column.field.column  # type: ignore[union-attr]
    return ExportTable(model._meta.db_table, columns, model, queryset, redact=redact)


def project_models() -> list[type[models.Model]]:
    return [m for m in apps.get_models() if m._meta.app_label in PROJECT_APPS and m._meta.managed]


def owner_path(model: type[models.Model], depth: int = 2) -> str | None:
    """The lookup from ``model`` to the user who owns its rows (``owner``,
    ``conversation__owner``), or None."""
    if model is User:
        return "pk"
    for name in OWNER_FIELDS:
        try:
            f = model._meta.get_field(name)
        except Exception:
            continue
        if f.many_to_one and f.related_model is User:
            return name
    if depth > 1:
        for f in model._meta.concrete_fields:
            if f.many_to_one and f.related_model not in (None, User, model):
                inner = owner_path(f.related_model, depth - 1)  # type: ignore[arg-type]
                if inner and inner != "pk":
                    return f"{f.name}__{inner}"
    return None


def _user_tables(subject: User) -> list[ExportTable]:
    found = []
    for model in project_models():
        path = owner_path(model)
        if path is None or model._meta.label in OPERATOR_RECORDS:
            continue
        found.append(
            model_table(
                model, model._default_manager.filter(**owner_filter(path, subject)), redact=True
            )
        )
    return found


def owner_filter(path: str, user: User) -> dict[str, Any]:
    return {"pk": user.pk} if path == "pk" else {path: user}


def _analytics_tables(user: User, *, everyone: bool) -> list[ExportTable]:
    from conversations.models import Message

    messages = (
        Message.objects.all() if everyone else Message.objects.filter(conversation__owner=user)
    )
    daily = (
        messages.annotate(day=TruncDate("created_at"))
        .values("day", "model", "role")
        .annotate(
            messages=Count("id"),
            tokens_in=Sum("tokens_in"),
            tokens_out=Sum("tokens_out"),
            cost=Sum("cost"),
            rated=Count("id", filter=Q(feedback_rating__isnull=False)),
        )
        .order_by("day", "model", "role")
    )
    columns = [
        Column("day", "date"), Column("model", "str"), Column("role", "str"),
        Column("messages", "int"), Column("tokens_in", "int"), Column("tokens_out", "int"),
        Column("cost", "decimal"), Column("rated_messages", "int"),
    ]  # fmt: skip

    def rows() -> Iterator[tuple[Any, ...]]:
        for r in daily.iterator(chunk_size=2000):
            yield (
                r["day"], r["model"], r["role"], r["messages"], r["tokens_in"] or 0,
                r["tokens_out"] or 0, r["cost"], r["rated"],
            )  # fmt: skip

    return [ExportTable("daily_usage", columns, rows_fn=rows, count_hint=daily.count())]


def _custom_filter(model: type[models.Model], raw: Any, label: str) -> Q:
    if not isinstance(raw, dict):
        raise ApplicationError(
            f"The filters of {label} must be an object.",
            code="invalid_filters",
            details={"filters": [f"{label}: an object of field lookups."]},
        )
    condition = Q()
    for key, value in raw.items():
        name, _, lookup = str(key).partition("__")
        lookup = lookup or "exact"
        try:
            f = model._meta.get_field(name)
        except Exception:
            f = None
        if f is None or not f.concrete or lookup not in CUSTOM_LOOKUPS:
            raise ApplicationError(
                f"Unknown filter '{key}' on {label}.",
                code="invalid_filters",
                details={
                    "filters": [
                        f"{label}.{key}: a field of {label} and one of {sorted(CUSTOM_LOOKUPS)}."
                    ]
                },
            )
        try:
            if lookup == "in":
                if not isinstance(value, list):
                    raise ValueError("an 'in' filter takes a list")
                [f.to_python(v) for v in value]
            elif lookup == "isnull":
                if not isinstance(value, bool):
                    raise ValueError("an 'isnull' filter takes true or false")
            elif isinstance(value, dict | list):
                raise ValueError("takes a single value")
            else:
                f.to_python(value)
        except Exception as exc:
            raise ApplicationError(
                f"Bad value for filter '{key}' on {label}: {exc}",
                code="invalid_filters",
                details={"filters": [f"{label}.{key}: {exc}"]},
            ) from exc
        condition &= Q(**{f"{f.attname if f.is_relation else name}__{lookup}": value})
    return condition


def _model_by_label(label: Any) -> type[models.Model]:
    try:
        model = apps.get_model(str(label))
    except (LookupError, ValueError):
        model = None
    if model is None or not model._meta.managed:
        raise ApplicationError(
            f"Unknown model '{label}'.",
            code="invalid_models",
            details={"models": [f"Unknown model: {label} (app_label.ModelName)."]},
        )
    return model


def _closure(tables: list[ExportTable], subject: int | None) -> list[ExportTable]:
    """Add the rows the exported rows refer to, so that an SQL export loads on its own."""
    by_model: dict[type[models.Model], ExportTable] = {t.model: t for t in tables if t.model}
    for _ in range(MAX_CLOSURE_ROUNDS):
        grew = False
        for table in list(by_model.values()):
            for f in table.model._meta.concrete_fields:  # type: ignore[union-attr]
                if not f.many_to_one or f.related_model is None:
                    continue
                target = f.related_model
                wanted = target.objects.filter(
                    pk__in=table.queryset.filter(**{f"{f.attname}__isnull": False}).values(
                        f.attname
                    )
                )
                have = by_model.get(target)
                if have is None:
                    if wanted.exists():
                        by_model[target] = model_table(target, wanted, redact=True)
                        grew = True
                    continue
                missing = wanted.exclude(pk__in=have.queryset.values("pk"))
                if missing.exists():
                    have.queryset = target.objects.filter(
                        Q(pk__in=have.queryset.values("pk")) | Q(pk__in=missing.values("pk"))
                    )
                    grew = True
        if not grew:
            break
    for table in by_model.values():
        if table.model is User:
            table.redact_users_except = subject
    return [t for t in tables if not t.model] + list(by_model.values())


def export_tables(
    *, scope: str, parameters: dict[str, Any], owner: User, for_sql: bool = False
) -> list[ExportTable]:
    """The tables of an export (raises ApplicationError for parameters that do not fit)."""
    from conversations.models import Conversation, Message, ToolApproval
    from knowledge.models import Chunk, Document

    subject: int | None = owner.pk
    if scope == "user":
        user_id = parameters.get("user_id", owner.pk)
        if str(user_id) != str(owner.pk) and not owner.is_staff:
            raise NotFound("No such user.", code="not_found")
        try:
            subject_user = User.objects.get(pk=user_id)
        except (User.DoesNotExist, ValueError, TypeError) as exc:
            raise NotFound("No such user.", code="not_found") from exc
        subject = subject_user.pk
        tables = _user_tables(subject_user)
    elif scope == "conversation":
        conversations = Conversation.objects.filter(pk=_uuid(parameters, "conversation_id"))
        if not owner.is_staff:
            conversations = conversations.filter(owner=owner)
        if not conversations.exists():
            raise NotFound("No such conversation.", code="not_found")
        tables = [
            model_table(Conversation, conversations, redact=True),
            model_table(
                Message, Message.objects.filter(conversation__in=conversations), redact=True
            ),
            model_table(
                ToolApproval,
                ToolApproval.objects.filter(conversation__in=conversations),
                redact=True,
            ),
        ]
    elif scope == "document":
        documents = Document.objects.filter(pk=_uuid(parameters, "document_id"))
        if not owner.is_staff:
            documents = documents.filter(owner=owner)
        if not documents.exists():
            raise NotFound("No such document.", code="not_found")
        tables = [
            model_table(Document, documents, redact=True),
            model_table(Chunk, Chunk.objects.filter(document__in=documents), redact=True),
        ]
    elif scope == "analytics":
        return _analytics_tables(owner, everyone=owner.is_staff and bool(parameters.get("all")))
    elif scope == "full":
        if not owner.is_staff:
            raise ApplicationError(
                "The full export is for staff.", code="permission_denied", status=403
            )
        subject = None
        # A proxy model's rows are its concrete model's (django-q2's Success and Failure
        # are views of its Task table): once, under the table's own model.
        every = [
            m
            for m in apps.get_models(include_auto_created=True)
            if m._meta.managed and not m._meta.proxy
        ]
        tables = [model_table(m, m._default_manager.all(), redact=False) for m in every]
        return tables
    elif scope == "custom":
        labels = parameters.get("models")
        if not isinstance(labels, list) or not labels:
            raise ApplicationError(
                "A custom export names its models.",
                code="invalid_models",
                details={"models": ["A non-empty list of app_label.ModelName."]},
            )
        filters = parameters.get("filters") or {}
        if not isinstance(filters, dict):
            raise ApplicationError(
                "filters must be an object keyed by model.",
                code="invalid_filters",
                details={"filters": ["An object: {app_label.ModelName: {lookup: value}}."]},
            )
        unknown = sorted(set(filters) - {str(label) for label in labels})
        if unknown:
            raise ApplicationError(
                f"Filters for models not exported: {', '.join(unknown)}.",
                code="invalid_filters",
                details={"filters": [f"Not in models: {label}" for label in unknown]},
            )
        tables = []
        for label in dict.fromkeys(str(label) for label in labels):
            model = _model_by_label(label)
            queryset = model._default_manager.filter(
                _custom_filter(model, filters.get(label, {}), label)
            )
            if not owner.is_staff:
                path = owner_path(model)
                if path is None:
                    raise ApplicationError(
                        f"{label} has no owner: only staff export it.",
                        code="permission_denied",
                        status=403,
                    )
                queryset = queryset.filter(**owner_filter(path, owner))
            tables.append(model_table(model, queryset, redact=not owner.is_staff))
    else:
        raise ApplicationError(
            f"Unknown scope '{scope}'.", code="invalid_scope", details={"scope": ["Unknown scope."]}
        )
    return _closure(tables, subject) if for_sql else tables


def _uuid(parameters: dict[str, Any], name: str) -> str:
    import uuid

    raw = parameters.get(name)
    try:
        return str(uuid.UUID(str(raw)))
    except (ValueError, TypeError) as exc:
        raise ApplicationError(
            f"{name} must be a UUID.", code="invalid_parameters", details={name: ["A UUID."]}
        ) from exc


def sql_sequences(tables: list[ExportTable]) -> list[str]:
    """setval statements for the integer-keyed tables, so that rows made after loading an
    SQL export do not collide with it."""
    out = []
    for table in tables:
        if table.model is None:
            continue
        pk = table.model._meta.pk
        if isinstance(pk, models.AutoField | models.BigAutoField | models.SmallAutoField):
            qn = connection.ops.quote_name
            out.append(
                f"SELECT setval(pg_get_serial_sequence('{qn(table.name)}', '{pk.column}'), "
                f"coalesce(max({qn(pk.column)}), 0) + 1, false) FROM {qn(table.name)};"
            )
    return out


def today() -> dt.date:
    return dt.date.today()
