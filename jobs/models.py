from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class JobPriority(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


# Rank 0 runs first. The claim orders by `rank_at` (see jobs.worker), not by this number.
PRIORITY_RANK = {
    JobPriority.CRITICAL: 0,
    JobPriority.HIGH: 1,
    JobPriority.NORMAL: 2,
    JobPriority.LOW: 3,
}


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # due: a worker may claim it now
    SCHEDULED = "scheduled", "Scheduled"  # waits for run_at or a retry's backoff
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"  # PermanentJobError (or an unknown handler): never retried
    CANCELLED = "cancelled", "Cancelled"
    DEAD = "dead", "Dead"  # every attempt failed: the dead letter


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING)
FINISHED_STATUSES = (
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.DEAD,
)


class Job(models.Model):
    """One unit of background work; its row is the only source of truth about it."""

    handler = models.CharField(max_length=100)
    args = models.JSONField(default=dict, blank=True)
    priority = models.CharField(
        max_length=10, choices=JobPriority.choices, default=JobPriority.NORMAL
    )
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.PENDING)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="jobs",
        db_index=False,  # jobs_owner_idx below serves owner lookups
    )
    # NULL, not "", means "no key": the unique constraint below ignores NULLs.
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001

    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    timeout_seconds = models.PositiveIntegerField(default=300)
    # When the job becomes (or became) due: run_at, or the end of a retry's backoff.
    available_at = models.DateTimeField()
    # available_at pushed back by the priority's aging offset: the claim takes the lowest.
    rank_at = models.DateTimeField()
    # When a "run the next job" token was last sent to django-q2 on this job's behalf.
    dispatched_at = models.DateTimeField(null=True, blank=True)

    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=200, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    # Who runs the current attempt: the clock kills a hung worker on its own host.
    worker_host = models.CharField(max_length=255, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    q_task_id = models.CharField("django-q2 task id", max_length=32, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        # Few indexes on purpose: every attempt updates its row twice (claim, outcome), and
        # a status change updates every index, so each one is paid for on every job.
        indexes = [
            # The claim: the lowest rank among due jobs, FIFO by id on ties.
            models.Index(
                fields=["rank_at", "id"],
                name="jobs_claim_idx",
                condition=Q(status="pending"),
            ),
            models.Index(
                fields=["available_at"],
                name="jobs_scheduled_idx",
                condition=Q(status="scheduled"),
            ),
            # The clock looks at running jobs twice a second: a tiny partial index.
            models.Index(fields=["id"], name="jobs_running_idx", condition=Q(status="running")),
            models.Index(fields=["finished_at"], name="jobs_finished_idx"),
            models.Index(fields=["owner", "-id"], name="jobs_owner_idx"),
        ]
        constraints = [
            # One active job per (owner, dedupe key); NULL owners (system jobs) collide too.
            models.UniqueConstraint(
                fields=["owner", "dedupe_key"],
                name="jobs_active_dedupe_key",
                condition=Q(status__in=["pending", "scheduled", "running"])
                & Q(dedupe_key__isnull=False),
                nulls_distinct=False,
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="jobs_progress_max_100"),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1), name="jobs_max_attempts_min_1"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.handler} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def next_attempt_at(self):  # type: ignore[no-untyped-def]
        """When the next attempt may start (None once running or finished)."""
        if self.status in (JobStatus.PENDING, JobStatus.SCHEDULED):
            return self.available_at
        return None
