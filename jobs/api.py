"""Jobs API (DRF): list/create, detail, cancel, retry, stats."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from core.validation import (
    RejectUnknownFields,
    StrictCharField,
    StrictIntegerField,
    require_json_body,
)
from jobs.models import Job, JobPriority, JobStatus
from jobs.registry import handler_names
from jobs.selectors import job_get, job_list, job_stats
from jobs.services import (
    MAX_ATTEMPTS_LIMIT,
    job_cancel,
    job_create_for_user,
    job_retry,
    max_timeout_seconds,
)


class JobSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)
    timeout = serializers.IntegerField(source="timeout_seconds", read_only=True)
    next_attempt_at = serializers.DateTimeField(read_only=True, allow_null=True)
    cancel_requested = serializers.SerializerMethodField()
    traceback = serializers.SerializerMethodField()
    # Any JSON, null included: a nullable JSONField becomes `oneOf [{}, {type: null}]` in
    # OAS 3.1, which null matches twice (invalid).
    result = serializers.JSONField(read_only=True, help_text="The handler's return value.")

    class Meta:
        model = Job
        fields = [
            "id",
            "handler",
            "args",
            "priority",
            "status",
            "owner",
            "attempts",
            "max_attempts",
            "timeout",
            "next_attempt_at",
            "progress",
            "progress_message",
            "cancel_requested",
            "result",
            "error",
            "traceback",
            "dedupe_key",
            "q_task_id",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_cancel_requested(self, job: Job) -> bool:
        return job.cancel_requested_at is not None

    def get_traceback(self, job: Job) -> str:
        # Tracebacks show code paths and values: operators only.
        request = self.context.get("request")
        return job.traceback if request is not None and request.user.is_staff else ""


class HandlerNameField(serializers.ChoiceField):
    """A handler's name. The schema lists the handlers registered when it is generated; an
    unknown name is left to the service, which answers 400 ``unknown_handler``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[], **kwargs)

    @property  # type: ignore[override]
    def choices(self) -> dict[str, str]:
        return {name: name for name in handler_names()}

    @choices.setter
    def choices(self, value: Any) -> None:
        pass  # always the registry's

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return data


class JobCreateSerializer(RejectUnknownFields, serializers.Serializer):
    handler = HandlerNameField()
    args = serializers.DictField(required=False, default=dict)
    priority = serializers.ChoiceField(choices=JobPriority.choices, default=JobPriority.NORMAL)
    max_attempts = StrictIntegerField(required=False, min_value=1, max_value=MAX_ATTEMPTS_LIMIT)
    timeout = StrictIntegerField(required=False, min_value=1, max_value=max_timeout_seconds())
    run_at = serializers.DateTimeField(required=False)
    dedupe_key = StrictCharField(required=False, max_length=200)


class JobListFilterSerializer(serializers.Serializer):
    """The list's query parameters: an unknown status or priority is a 400, not an empty page."""

    status = serializers.ChoiceField(
        choices=JobStatus.choices,
        required=False,
        error_messages={
            "invalid_choice": f'"{{input}}" is not one of: {", ".join(JobStatus.values)}.'
        },
    )
    priority = serializers.ChoiceField(
        choices=JobPriority.choices,
        required=False,
        error_messages={
            "invalid_choice": f'"{{input}}" is not one of: {", ".join(JobPriority.values)}.'
        },
    )
    handler = serializers.CharField(required=False, max_length=100)


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Background jobs: your own (staff see all). Others' ids answer 404."""

    parser_classes = [JSONParser]  # args are a JSON object: forms cannot say it

    serializer_class = JobSerializer
    lookup_value_converter = "int"

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        filters = JobListFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return job_list(user=self.request.user, **filters.validated_data)

    def get_object(self) -> Job:
        return job_get(user=self.request.user, job_id=int(self.kwargs["pk"]))

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=JobStatus.values),
            OpenApiParameter("priority", str, enum=JobPriority.values),
            OpenApiParameter("handler", str),
        ],
        responses={200: JobSerializer(many=True)},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request=JobCreateSerializer,
        responses={201: JobSerializer, 200: JobSerializer},
        description="201 with the new job; 200 with the active job that has this dedupe_key.",
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_json_body(request)
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        job = job_create_for_user(user=request.user, **data)
        code = status.HTTP_200_OK if getattr(job, "deduplicated", False) else 201
        return Response(JobSerializer(job, context={"request": request}).data, status=code)

    @extend_schema(request=None, responses={200: JobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = job_cancel(job=self.get_object())
        return Response(JobSerializer(job, context={"request": request}).data)

    @extend_schema(request=None, responses={200: JobSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        job = job_retry(job=self.get_object())
        return Response(JobSerializer(job, context={"request": request}).data)

    @extend_schema(
        responses={
            200: inline_serializer(
                "JobStats",
                {
                    "by_status": serializers.DictField(child=serializers.IntegerField()),
                    "by_priority": serializers.DictField(child=serializers.DictField()),
                    "throughput": serializers.DictField(),
                    "wait_seconds": serializers.DictField(),
                    "run_seconds": serializers.DictField(),
                    "workers": serializers.DictField(child=serializers.IntegerField()),
                    "oldest_pending_age_seconds": serializers.FloatField(allow_null=True),
                    "stalled": serializers.CharField(
                        allow_null=True,
                        help_text="Why no job is being taken although some are due, or null.",
                    ),
                    "tokens_waiting": serializers.IntegerField(),
                    "generated_at": serializers.DateTimeField(),
                },
            )
        }
    )
    @action(detail=False, methods=["get"])
    def stats(self, request: Request) -> Response:
        return Response(job_stats(user=request.user))
