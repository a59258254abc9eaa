"""Knowledge API (DRF): documents, their chunks and similar documents, search."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApplicationError
from core.validation import (
    METADATA_SCHEMA,
    InvalidInput,
    RejectUnknownFields,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    json_object,
    require_json_body,
)
from knowledge.models import Chunk, Document
from knowledge.schema import MetadataFilterField
from knowledge.search import (
    CONTENT_TYPE_NAMES,
    MAX_K,
    SEARCH_MODES,
    DocumentFilter,
    document_metadata_query,
    document_similar,
    knowledge_search,
)
from knowledge.selectors import chunk_list, document_get, document_list
from knowledge.services import (
    document_delete,
    document_reprocess,
    document_upload,
    upload_size_check,
)
from knowledge.uploads import client_file_name
from web.http_policy import RoutePolicy, route_policy
from web.threats import upload_threats_refuse


class DocumentSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    chunk_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Document
        fields = [
            "id",
            "title",
            "filename",
            "content_type",
            "size",
            "sha256",
            "metadata",
            "owner",
            "status",
            "progress",
            "failure_reason",
            "embedding_space",
            "chunk_count",
            "created_at",
            "updated_at",
            "processed_at",
        ]
        read_only_fields = fields


@extend_schema_field(
    {**METADATA_SCHEMA, "description": "A JSON object (a multipart part holding JSON text)."}
)
class JsonObjectPartField(serializers.CharField):
    """A multipart part holding a JSON object: declared as the object it is (OpenAPI sends
    an object part of a form as JSON), read as the text it arrives as."""


class UploadSerializer(RejectUnknownFields, serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    metadata = JsonObjectPartField(required=False, allow_blank=True)
    title = serializers.CharField(required=False, max_length=255)

    def validate_metadata(self, value: str) -> dict[str, Any]:
        if not value.strip():
            return {}
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise serializers.ValidationError(f"Not valid JSON: {exc}") from exc
        try:
            return json_object(parsed)
        except InvalidInput as exc:
            raise serializers.ValidationError(str(exc)) from exc


class ChunkSerializer(serializers.ModelSerializer):
    class Meta:
        model = Chunk
        fields = ["id", "position", "page", "section", "content", "token_count", "content_hash"]
        read_only_fields = fields


class SimilarDocumentSerializer(serializers.Serializer):
    document = DocumentSerializer()
    score = serializers.FloatField(help_text="Cosine similarity of the closest chunk.")


class SimilarDocumentsSerializer(serializers.Serializer):
    results = SimilarDocumentSerializer(many=True)


class DocumentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's documents (staff see all). Upload with multipart `file` (+ `metadata`)."""

    serializer_class = DocumentSerializer
    lookup_value_converter = "uuid"
    parser_classes = [MultiPartParser]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Document.objects.none()
        return document_list(user=self.request.user)

    def get_object(self) -> Document:
        return document_get(user=self.request.user, document_id=self.kwargs["pk"])

    @extend_schema(
        request={"multipart/form-data": UploadSerializer},
        responses={202: DocumentSerializer, 200: DocumentSerializer},
        description=(
            "Upload and process a document (txt, md, html, pdf, docx, csv, json). 202 with "
            "its status (processed, or failed with a reason); 200 with the existing document "
            "when the caller already uploaded the same bytes, its `title` and `metadata` "
            "replaced by those sent (every field is validated first). A file name with a "
            "path is refused (400 `threat_detected` when it looks like traversal, else "
            "`invalid_filename`)."
        ),
    )
    @route_policy(rate="expensive", uploads=True)
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # Refused before the body is read, then before the file is.
        upload_size_check(int(request.META.get("CONTENT_LENGTH") or 0), whole_request=True)
        serializer = UploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        filename = client_file_name(upload)
        upload_threats_refuse(
            request,
            {"file.filename": filename},
            {"metadata": serializer.validated_data.get("metadata") or {}},
        )
        upload_size_check(upload.size)
        document, created = document_upload(
            owner=request.user,
            data=upload.read(),
            filename=filename,
            metadata=serializer.validated_data.get("metadata"),
            title=serializer.validated_data.get("title"),
        )
        document = document_get(user=request.user, document_id=document.pk)
        return Response(
            DocumentSerializer(document).data,
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )

    def perform_destroy(self, instance: Document) -> None:
        document_delete(document=instance, actor=self.request.user)

    @extend_schema(
        request=None,
        responses={202: DocumentSerializer},
        description=(
            "Process the document again from its stored bytes (after a failure, or to apply "
            "new chunking or embedding settings): 202 with its status. 409 `document_busy` "
            "while a processing job for it is still queued or running."
        ),
    )
    @action(detail=True, methods=["post"])
    @route_policy(rate="expensive")
    def reprocess(self, request: Request, pk: str | None = None) -> Response:
        document = document_reprocess(document=self.get_object(), actor=request.user)
        document = document_get(user=request.user, document_id=document.pk)
        return Response(DocumentSerializer(document).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: ChunkSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def chunks(self, request: Request, pk: str | None = None) -> Response:
        page = self.paginate_queryset(chunk_list(document=self.get_object()))
        return self.get_paginated_response(ChunkSerializer(page, many=True).data)

    @extend_schema(responses={200: SimilarDocumentsSerializer})
    @action(detail=True, methods=["get"])
    @route_policy(rate="expensive")
    def similar(self, request: Request, pk: str | None = None) -> Response:
        k = _int_param(request, "k", default=5, maximum=50)
        similar = document_similar(user=request.user, document=self.get_object(), k=k)
        return Response(
            {
                "results": SimilarDocumentSerializer(
                    [{"document": doc, "score": score} for doc, score in similar], many=True
                ).data
            }
        )


def _int_param(request: Request, name: str, *, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApplicationError(
            f"{name} is an integer from 1 to {maximum}.",
            code="invalid_parameter",
            details={name: [f"An integer from 1 to {maximum}."]},
        )
    return int(raw)


class DateOrDateTimeField(serializers.DateTimeField):
    """An ISO datetime, or a bare date (as a date: date_to then covers that whole day).
    Dates up to 9999-12-30: the end of 9999-12-31 is past what Python can represent."""

    default_error_messages = {"out_of_range": "Use a date from 0001-01-02 to 9999-12-30."}

    def to_internal_value(self, value: Any) -> dt.date | dt.datetime:
        if isinstance(value, str) and len(value) == 10:
            try:
                day = dt.date.fromisoformat(value)
            except ValueError:
                self.fail("invalid", format="YYYY-MM-DD or an ISO 8601 datetime")
            if not dt.date.min < day < dt.date.max:
                self.fail("out_of_range")
            return day
        try:
            moment = super().to_internal_value(value)
            # Converting to UTC (in SQL, too) must stay within the representable range.
            moment.astimezone(dt.UTC) + dt.timedelta(days=1)
            moment.astimezone(dt.UTC) - dt.timedelta(days=1)
        except OverflowError:
            self.fail("out_of_range")
        return moment


class FilterSerializer(RejectUnknownFields, serializers.Serializer):
    metadata_filter = MetadataFilterField(required=False, default=dict)
    date_from = DateOrDateTimeField(required=False, allow_null=True)
    date_to = DateOrDateTimeField(required=False, allow_null=True)
    content_types = serializers.ListField(
        child=serializers.ChoiceField(choices=CONTENT_TYPE_NAMES),
        required=False,
        allow_empty=True,
        help_text="Short names (txt, md, html, pdf, docx, csv, json) or MIME types.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("date_from"), attrs.get("date_to")
        if start is not None and end is not None and _moment(start) > _moment(end, end=True):
            # Nothing can match: say so, rather than answer an empty page.
            raise serializers.ValidationError({"date_to": ["Not before date_from."]})
        return attrs


def _moment(value: dt.date | dt.datetime, *, end: bool = False) -> dt.datetime:
    """A filter's bound as an aware datetime: a bare date is its day's start, or its end."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.combine(value, dt.time.max if end else dt.time.min, tzinfo=dt.UTC)


class SearchSerializer(FilterSerializer):
    query = StrictCharField(max_length=4000)
    k = StrictIntegerField(min_value=1, max_value=MAX_K, default=5)
    mode = serializers.ChoiceField(choices=SEARCH_MODES, default="hybrid")
    similarity_threshold = StrictFloatField(
        required=False, allow_null=True, min_value=0.0, max_value=1.0
    )


class SearchHitSerializer(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document = serializers.DictField(help_text="{id, title, content_type}")
    content = serializers.CharField()
    score = serializers.FloatField()
    similarity = serializers.FloatField(allow_null=True)
    highlight = serializers.CharField(help_text="HTML-escaped, matches in <mark>.")
    position = serializers.IntegerField()
    page = serializers.IntegerField(allow_null=True)
    section = serializers.CharField()


class SearchResponseSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    mode = serializers.ChoiceField(choices=SEARCH_MODES)
    results = SearchHitSerializer(many=True)


class SearchView(APIView):
    """Search the caller's documents: vector, keyword or hybrid (reciprocal rank fusion)."""

    parser_classes = [JSONParser]  # a filter is a JSON object: forms cannot say it
    route_policy = RoutePolicy(rate="expensive")

    @extend_schema(request=SearchSerializer, responses={200: SearchResponseSerializer})
    def post(self, request: Request) -> Response:
        require_json_body(request)
        serializer = SearchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        hits = knowledge_search(
            user=request.user,
            query=data["query"],
            k=data["k"],
            mode=data["mode"],
            filters=DocumentFilter.from_data(data),
            similarity_threshold=data.get("similarity_threshold"),
        )
        return Response(
            {
                "count": len(hits),
                "mode": data["mode"],
                "results": [hit.as_dict() for hit in hits],
            }
        )


# Named like drf-spectacular's own pages, so the v2 schema hook gives it the cursor shape.
@extend_schema_serializer(component_name="PaginatedDocumentQueryList")
class DocumentPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = DocumentSerializer(many=True)


class MetadataQueryView(APIView):
    """Documents by metadata, upload dates and content types alone (paginated)."""

    parser_classes = [JSONParser]
    route_policy = RoutePolicy(rate="expensive")

    @extend_schema(request=FilterSerializer, responses={200: DocumentPageSerializer})
    def post(self, request: Request) -> Response:
        require_json_body(request)
        serializer = FilterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        documents = document_metadata_query(
            user=request.user, filters=DocumentFilter.from_data(serializer.validated_data)
        )
        paginator = DocumentViewSet.pagination_class()
        page = paginator.paginate_queryset(documents, request, view=self)
        return paginator.get_paginated_response(DocumentSerializer(page, many=True).data)


__all__ = ["DocumentViewSet", "MetadataQueryView", "SearchView"]
