from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST
from django_q.admin import ScheduleAdmin as DjangoQScheduleAdmin
from django_q.models import Failure, OrmQ, Schedule, Success

from core.errors import ApplicationError
from jobs.models import Job, JobPriority, JobStatus
from jobs.registry import handler_get, handler_names
from jobs.selectors import job_stats
from jobs.services import (
    enqueue,
    job_cancel,
    job_options_validate,
    job_retry,
    jobs_cancel,
    jobs_retry,
    jobs_run_now,
)

# django-q2's task screens list its tokens ("run the next job"), not Chatter's jobs, beside
# the Jobs screen; an operator reads jobs there. Its Schedule screen stays (the maintenance
# schedule lives in it).
for _model in (Success, Failure, OrmQ):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class ScheduleAdmin(DjangoQScheduleAdmin):
    """django-q2's Schedule screen, whose "last run" linked to the task screens removed
    above: once a schedule had run, the link could not be reversed and the list answered
    500. The last run is named (its jobs are on the Jobs screen)."""

    @admin.display(description="last run")
    def get_last_run(self, obj: Schedule) -> str | None:
        return getattr(obj, "task_name", None)


if admin.site.is_registered(Schedule):
    admin.site.unregister(Schedule)
admin.site.register(Schedule, ScheduleAdmin)

ACTIVE = [JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING]


class JobAddForm(forms.ModelForm):
    handler = forms.ChoiceField(choices=())
    timeout_seconds = forms.IntegerField(required=False, min_value=1, label="Timeout (s)")
    max_attempts = forms.IntegerField(required=False, min_value=1)

    class Meta:
        model = Job
        fields = ["handler", "args", "priority", "max_attempts", "timeout_seconds", "dedupe_key"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["handler"].choices = [(name, name) for name in handler_names()]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        handler = data.get("handler", "")
        try:
            job_options_validate(
                handler_get(handler),
                handler,
                data.get("args") or {},
                data.get("priority") or JobPriority.NORMAL,
                data.get("max_attempts"),
                data.get("timeout_seconds"),
            )
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from exc
        return data


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "handler",
        "priority",
        "status",
        "attempt_count",
        "progress_display",
        "owner",
        "short_error",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "priority", "handler"]
    list_select_related = ["owner"]
    search_fields = ["=id", "handler", "error", "dedupe_key", "owner__username", "q_task_id"]
    date_hierarchy = "created_at"
    actions = ["cancel_jobs", "retry_jobs", "run_now"]
    fieldsets = [
        (None, {"fields": ["handler", "args", "priority", "status", "owner", "dedupe_key"]}),
        (
            "Attempts",
            {
                "fields": [
                    "attempts",
                    "max_attempts",
                    "timeout_seconds",
                    "available_at",
                    "cancel_requested_at",
                    "worker_host",
                    "worker_pid",
                    "q_task_id",
                ]
            },
        ),
        (
            "Outcome",
            {"fields": ["progress", "progress_message", "result", "error", "traceback_display"]},
        ),
        ("Times", {"fields": ["created_at", "started_at", "finished_at", "updated_at"]}),
    ]

    def get_form(self, request: HttpRequest, obj: Job | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = JobAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> Any:
        if obj is None:
            return [(None, {"fields": JobAddForm.Meta.fields})]
        return self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> Any:
        if obj is None:
            return []
        # A job's record is what happened: change it through the actions, never by hand.
        return [name for _, opts in self.fieldsets for name in opts["fields"]]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # cancel instead; finished jobs are pruned by maintenance

    def save_model(self, request: HttpRequest, obj: Job, form: Any, change: bool) -> None:
        if change:
            return
        data = form.cleaned_data
        job = enqueue(
            data["handler"],
            args=data.get("args") or {},
            priority=data.get("priority") or JobPriority.NORMAL,
            max_attempts=data.get("max_attempts"),
            timeout=data.get("timeout_seconds"),
            dedupe_key=data.get("dedupe_key") or None,
            owner=request.user,  # type: ignore[arg-type]
        )
        obj.pk = job.pk
        obj._state.adding = False

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<int:job_id>/cancel/", view(self.cancel_view), name="jobs_job_cancel"),
            path("<int:job_id>/retry/", view(self.retry_view), name="jobs_job_retry"),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: Any = None,
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            # Every field is read-only: nothing to save, nothing to "change".
            "title": "View job",
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        if job is not None and self.has_change_permission(request, job):
            extra_context["job_cancellable"] = job.status in ACTIVE and not (
                job.status == JobStatus.RUNNING and job.cancel_requested_at
            )
            extra_context["job_retryable"] = job.status not in ACTIVE
        return super().change_view(request, object_id, form_url, extra_context)

    def _job_operation(self, request: HttpRequest, job_id: int, operation: Any, done: str) -> Any:
        job = get_object_or_404(Job, pk=job_id)
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        try:
            job = operation(job=job)
        except ApplicationError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
        else:
            self.message_user(request, f"Job {job.pk} {done} ({job.status}).", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))

    @method_decorator(require_POST)
    def cancel_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        return self._job_operation(request, job_id, job_cancel, "cancelled")

    @method_decorator(require_POST)
    def retry_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        return self._job_operation(request, job_id, job_retry, "re-queued")

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "job_stats": job_stats(user=request.user)}  # type: ignore[arg-type]
        return super().changelist_view(request, extra_context)

    @admin.display(description="attempts", ordering="attempts")
    def attempt_count(self, obj: Job) -> str:
        return f"{obj.attempts}/{obj.max_attempts}"

    @admin.display(description="progress", ordering="progress")
    def progress_display(self, obj: Job) -> str:
        return f"{obj.progress}% {obj.progress_message}".strip()

    @admin.display(description="error")
    def short_error(self, obj: Job) -> str:
        return obj.error[:80]

    @admin.display(description="traceback")
    def traceback_display(self, obj: Job) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.traceback or "-")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        count = jobs_cancel(queryset=queryset)
        self.message_user(request, f"Cancelled {count} job(s).", level=messages.SUCCESS)

    @admin.action(description="Retry selected finished jobs")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        count = jobs_retry(queryset=queryset)
        self.message_user(request, f"Re-queued {count} job(s).", level=messages.SUCCESS)

    @admin.action(description="Run selected scheduled jobs now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        count = jobs_run_now(queryset=queryset)
        self.message_user(request, f"Made {count} job(s) due now.", level=messages.SUCCESS)
