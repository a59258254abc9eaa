"""The events of the jobs app: a job's end (jobs.services.job_outcome_write emits them)."""

from __future__ import annotations

from core.events import DATETIME, STRING, event_type_register, object_schema


def _job(status: list[str]) -> dict[str, object]:
    return object_schema(
        {
            "id": {"type": "integer"},
            "handler": STRING,
            "status": {"enum": status},
            "priority": {"enum": ["critical", "high", "normal", "low"]},
            "attempts": {"type": "integer", "minimum": 0},
            "error": {**STRING, "maxLength": 1000, "description": "Empty when it succeeded."},
            "created_at": DATETIME,
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
        }
    )


event_type_register(
    "job.completed",
    schema=_job(["succeeded"]),
    description="A job succeeded (GET jobs/{id}/ has its result).",
)
event_type_register(
    "job.failed",
    schema=_job(["failed", "dead"]),
    description="A job ended without succeeding: failed for good (a permanent error), or dead "
    "(its last attempt failed). Not sent for attempts that will be retried.",
)
