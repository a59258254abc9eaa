"""Data management API (DRF): exports, backups (staff), restores, retention policies,
bulk operations. Thin: every write is a service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.validators import UniqueValidator
from rest_framework.views import APIView

from accounts.permissions import HasApiScope, IsStaff
from core.errors import NotFound
from core.validation import (
    RejectUnknownFields,
    StrictCharField,
    StrictIntegerField,
    require_json_body,
)
from datamgmt.models import (
    Backup,
    BackupType,
    Compression,
    Export,
    ExportFormat,
    ExportScope,
    Restore,
    RetentionPolicy,
)
from datamgmt.selectors import backup_list, export_get, export_list, policy_list, restore_list
from datamgmt.services.backups import backup_request
from datamgmt.services.bulk import BULK_ACTIONS, BULK_TARGETS, bulk_preview, bulk_request
from datamgmt.services.exports import export_file, export_request
from datamgmt.services.restores import restore_request
from datamgmt.services.retention import RETENTION_SCOPES, policy_preview, policy_purge_request
from datamgmt.services.retention_policies import policy_create, policy_delete, policy_update
from jobs.api import JobSerializer
from web.versioning import client_path

if TYPE_CHECKING:
    from jobs.models import Job


class QueuedJobSerializer(JobSerializer):
    """The job doing the work, as `GET jobs/{id}/` shows it, and `url`: where to follow it."""

    url = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "url"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, job: Job) -> str:
        request = self.context["request"]
        return request.build_absolute_uri(
            client_path(request, reverse("job-detail", args=[job.pk]))
        )


def job_accepted(request: Request, job: Job) -> Response:
    """202 with the queued job; `Location` is where to follow it."""
    body = QueuedJobSerializer(job, context={"request": request}).data
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class StrictBooleanField(serializers.BooleanField):
    """true or false only (DRF's own takes 0, 1, "yes"...)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class PassphraseField(serializers.CharField):
    """A passphrase, taken exactly as sent (no trimming, no normalising), a JSON string only."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, write_only=True, max_length=1024, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ExportSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    job = serializers.IntegerField(source="job_id", read_only=True, allow_null=True)
    parameters = serializers.JSONField(read_only=True)
    row_counts = serializers.JSONField(read_only=True)

    class Meta:
        model = Export
        fields = [
            "id", "owner", "scope", "parameters", "format", "compression", "encrypted", "status",
            "job", "file_name", "size", "sha256", "row_counts", "error", "created_at",
            "finished_at", "expires_at",
        ]  # fmt: skip
        read_only_fields = fields


class ExportCreateSerializer(RejectUnknownFields, serializers.Serializer):
    scope = serializers.ChoiceField(choices=ExportScope.choices)
    format = serializers.ChoiceField(choices=ExportFormat.choices)
    compression = serializers.ChoiceField(choices=Compression.choices, default=Compression.NONE)
    passphrase = PassphraseField(required=False, min_length=8)
    parameters = serializers.DictField(
        required=False,
        default=dict,
        help_text="What the scope names: user `{user_id}` (staff: anyone's), conversation "
        "`{conversation_id}`, document `{document_id}`, analytics `{all}` (staff), custom "
        "`{models: [app_label.ModelName], filters: {model: {field__lookup: value}}}`.",
    )


class ExportViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your exports (staff see all); only the owner downloads one."""

    serializer_class = ExportSerializer
    parser_classes = [JSONParser]
    lookup_value_converter = "uuid"

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Export.objects.none()
        return export_list(user=self.request.user)

    def get_object(self) -> Export:
        return export_get(user=self.request.user, export_id=self.kwargs["pk"])

    @extend_schema(
        request=ExportCreateSerializer,
        responses={
            202: ExportSerializer,
        },
        description="Queue an export: 202 with its status; the file is written by a job. With "
        "`passphrase`, the file is age-encrypted (`age -d` opens it). Expires after 7 days.",
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_json_body(request)
        serializer = ExportCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        export = export_request(
            owner=request.user,
            scope=data["scope"],
            format=data["format"],
            compression=data["compression"],
            passphrase=data.get("passphrase"),
            parameters=data["parameters"],
        )
        return Response(ExportSerializer(export).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The export's file."
            ),
        },
        description="The file, for its owner only (anyone else: 404). 409 while it is being "
        "written, 410 once it has expired.",
    )
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None) -> FileResponse:
        path = export_file(export=self.get_object(), user=request.user)
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name)


class BackupSerializer(serializers.ModelSerializer):
    parent = serializers.UUIDField(source="parent_id", read_only=True, allow_null=True)
    chain = serializers.SerializerMethodField()
    job = serializers.IntegerField(source="job_id", read_only=True, allow_null=True)
    row_counts = serializers.SerializerMethodField()

    class Meta:
        model = Backup
        fields = [
            "id", "type", "parent", "chain", "status", "encryption", "file_name", "size",
            "sha256", "schema_version", "row_counts", "verification", "verification_message",
            "verified_at", "job", "error", "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_chain(self, backup: Backup) -> list[str]:
        """The ids a restore of this backup applies, the full first."""
        return [*backup.manifest.get("chain", []), str(backup.pk)] if backup.manifest else []

    def get_row_counts(self, backup: Backup) -> dict[str, int]:
        return {
            name: entry["rows"] for name, entry in (backup.manifest.get("tables") or {}).items()
        }


class BackupCreateSerializer(RejectUnknownFields, serializers.Serializer):
    type = serializers.ChoiceField(choices=BackupType.choices)
    passphrase = PassphraseField(required=False, min_length=8)
    recipients = serializers.ListField(
        child=StrictCharField(max_length=200), required=False, max_length=20
    )


class RestoreSerializer(serializers.ModelSerializer):
    backup = serializers.UUIDField(source="backup_id", read_only=True)
    job = serializers.IntegerField(source="job_id", read_only=True, allow_null=True)
    chain = serializers.JSONField(read_only=True)
    result = serializers.JSONField(read_only=True)

    class Meta:
        model = Restore
        fields = [
            "id",
            "backup",
            "chain",
            "target_database",
            "status",
            "result",
            "error",
            "job",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class RestoreCreateSerializer(RejectUnknownFields, serializers.Serializer):
    passphrase = PassphraseField(required=False)
    target_database = serializers.RegexField(
        r"^[a-z_][a-z0-9_]{0,62}$", required=False, help_text="A new database on the same server."
    )


class BackupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Backups (staff): full, incremental, differential, with their chain and verification."""

    serializer_class = BackupSerializer
    permission_classes = [HasApiScope, IsStaff]
    parser_classes = [JSONParser]
    lookup_value_converter = "uuid"

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Backup.objects.none()
        return backup_list()

    @extend_schema(
        request=BackupCreateSerializer,
        responses={202: BackupSerializer},
        description="Queue a backup: 202 with its status. `passphrase` (age scrypt) or "
        "`recipients` (age public keys; default: CHATTER_BACKUP_RECIPIENTS).",
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_json_body(request)
        serializer = BackupCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        backup = backup_request(
            type=data["type"],
            actor=request.user,
            passphrase=data.get("passphrase"),
            recipients=data.get("recipients"),
        )
        return Response(BackupSerializer(backup).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=RestoreCreateSerializer,
        responses={
            202: RestoreSerializer,
        },
        description="Restore the chain that ends in this backup into a new database on the same "
        "server (checked now: files, checksums, passphrase; restored and verified by a job).",
    )
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, pk: str | None = None) -> Response:
        require_json_body(request)
        serializer = RestoreCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        restore = restore_request(
            backup=self.get_object(),
            actor=request.user,
            passphrase=serializer.validated_data.get("passphrase"),
            target_database=serializer.validated_data.get("target_database"),
        )
        return Response(RestoreSerializer(restore).data, status=status.HTTP_202_ACCEPTED)


class RestoreViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Restores (staff) and their outcome."""

    serializer_class = RestoreSerializer
    permission_classes = [HasApiScope, IsStaff]
    lookup_value_converter = "uuid"

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Restore.objects.none()
        return restore_list()


class RetentionPolicySerializer(RejectUnknownFields, serializers.ModelSerializer):
    # Declared fields lose the model's unique check: restated, or a taken name is a 500.
    name = StrictCharField(
        max_length=200,
        validators=[
            UniqueValidator(
                queryset=RetentionPolicy.objects.all(), message="A policy has this name already."
            )
        ],
    )
    scope = serializers.ChoiceField(choices=RETENTION_SCOPES)
    auto_purge = StrictBooleanField(default=False)
    age_days = StrictIntegerField(min_value=0, max_value=36500)
    filters = serializers.DictField(
        required=False, default=dict, help_text="Field lookups: {field__lookup: value}."
    )
    last_result = serializers.JSONField(read_only=True)

    class Meta:
        model = RetentionPolicy
        fields = [
            "id",
            "name",
            "scope",
            "age_days",
            "filters",
            "auto_purge",
            "last_run_at",
            "last_result",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "last_run_at", "last_result", "created_at", "updated_at"]


class CountsSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    policy = serializers.CharField()
    counts = serializers.DictField(child=serializers.IntegerField())
    total = serializers.IntegerField()


class ConfirmSerializer(RejectUnknownFields, serializers.Serializer):
    confirm = StrictBooleanField(default=False)


class RetentionPolicyViewSet(viewsets.ModelViewSet):
    """Retention policies (staff): preview is a dry run with counts per model."""

    serializer_class = RetentionPolicySerializer
    permission_classes = [HasApiScope, IsStaff]
    parser_classes = [JSONParser]
    lookup_value_converter = "uuid"

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return RetentionPolicy.objects.none()
        return policy_list()

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_json_body(request)
        return super().create(request, *args, **kwargs)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_json_body(request)
        return super().update(request, *args, **kwargs)

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = policy_create(actor=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = policy_update(
            policy=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance: RetentionPolicy) -> None:
        policy_delete(policy=instance, actor=self.request.user)

    @extend_schema(
        responses={200: CountsSerializer},
        description="A dry run: what a purge would delete now, per model.",
    )
    @action(detail=True, methods=["get"])
    def preview(self, request: Request, pk: str | None = None) -> Response:
        return Response(policy_preview(policy=self.get_object()))

    @extend_schema(
        request=ConfirmSerializer,
        responses={
            200: OpenApiResponse(CountsSerializer, description="The dry run (no `confirm`)."),
            202: OpenApiResponse(
                QueuedJobSerializer,
                description="`confirm: true`: the purge, queued as a job of yours (the one "
                "already queued for this policy, if any); its result has the counts deleted.",
            ),
        },
        description="Purge now. Without `confirm: true` it is the dry run (nothing deleted), "
        "200 with the counts; with it, 202 with the job that purges (`GET jobs/{id}/`).",
    )
    @action(detail=True, methods=["post"])
    def purge(self, request: Request, pk: str | None = None) -> Response:
        require_json_body(request)
        serializer = ConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = self.get_object()
        if not serializer.validated_data["confirm"]:
            return Response(policy_preview(policy=policy))
        return job_accepted(request, policy_purge_request(policy=policy, actor=request.user))


class BulkOperationSerializer(RejectUnknownFields, serializers.Serializer):
    action = serializers.ChoiceField(choices=list(BULK_ACTIONS))
    target = serializers.ChoiceField(choices=list(BULK_TARGETS))
    filters = serializers.DictField(required=False, default=dict)
    to_user = StrictCharField(
        required=False, max_length=150, help_text="reassign: the new owner's username."
    )
    confirm = StrictBooleanField(default=False, help_text="Without it: a dry run with counts.")


class BulkResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    action = serializers.CharField()
    target = serializers.CharField()
    counts = serializers.DictField(child=serializers.IntegerField())
    archive = serializers.UUIDField(
        required=False, help_text="archive: the export holding what was removed."
    )
    to_user = serializers.CharField(required=False)


class BulkOperationView(APIView):
    """Delete, archive or reassign (staff) by filter: a dry run unless `confirm` is true."""

    parser_classes = [JSONParser]

    @extend_schema(
        request=BulkOperationSerializer,
        responses={
            200: OpenApiResponse(BulkResultSerializer, description="The dry run (no `confirm`)."),
            202: OpenApiResponse(
                QueuedJobSerializer,
                description="`confirm: true`: the operation, queued as a job of yours; its "
                "`result` (once it has succeeded) is a BulkResult with `dry_run` false.",
            ),
        },
        description="Without `confirm` a dry run: 200 with the counts of what would change. "
        "With `confirm: true` the request is checked now (the same 4xx as the dry run) and the "
        "work is done by a job with your rights: 202 with the job (`GET jobs/{id}/`). The job "
        "acts on what the filters match when it runs, in one transaction with its audit entry.",
    )
    def post(self, request: Request) -> Response:
        require_json_body(request)
        serializer = BulkOperationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        options = dict(serializer.validated_data)
        confirm = options.pop("confirm")
        if not confirm:
            return Response(bulk_preview(actor=request.user, **options))
        return job_accepted(request, bulk_request(actor=request.user, **options))


__all__ = [
    "BackupViewSet",
    "BulkOperationView",
    "ExportViewSet",
    "NotFound",
    "RestoreViewSet",
    "RetentionPolicyViewSet",
]
