"""Reads for the operator console: the dashboard's figures, each one aggregate query over a
bounded window (the last ``DASHBOARD_DAYS`` days by the indexed time column), and what the
chat page shows of a conversation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Avg, Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounts.models import User
from agents.models import Agent, AgentInteraction
from agents.selectors import agent_usable
from conversations.models import Conversation, Message
from experiments.models import Experiment
from experiments.selectors import experiment_results
from jobs.models import Job, JobStatus
from jobs.selectors import job_stats
from knowledge.models import Document, DocumentStatus
from knowledge.services import PROCESSING_HANDLER
from webhooks.models import Delivery, DeliveryStatus

DASHBOARD_DAYS = 30
RUNNING_EXPERIMENTS_SHOWN = 5
TOP_ROWS = 10


def dashboard_window(*, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.date, dt.date]:
    """The dashboard's window: from the start of the UTC day ``DASHBOARD_DAYS - 1`` days
    ago to today, as the datetime its queries filter on and its first and last days."""
    today = (now or timezone.now()).astimezone(dt.UTC).date()
    first = today - dt.timedelta(days=DASHBOARD_DAYS - 1)
    return dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC), first, today


# --- usage -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UsageDay:
    day: dt.date
    messages: int
    replies: int
    tokens_in: int
    tokens_out: int
    cost: Decimal
    unpriced: int  # replies whose model has no known price (cost NULL)


# Named apart from the columns they sum: a filter below must still see the column.
_USAGE = {
    "messages": Count("id"),
    "replies": Count("id", filter=Q(role=Message.Role.ASSISTANT)),
    "unpriced": Count("id", filter=Q(role=Message.Role.ASSISTANT, cost__isnull=True)),
    "total_tokens_in": Coalesce(Sum("tokens_in"), 0),
    "total_tokens_out": Coalesce(Sum("tokens_out"), 0),
    "total_cost": Coalesce(Sum("cost"), Decimal(0)),
}


def _usage(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("tokens_in", "tokens_out", "cost"):
        row[name] = row.pop(f"total_{name}")
    return row


def usage_daily(*, since: dt.datetime) -> list[UsageDay]:
    """Messages, replies, tokens and cost per UTC day since ``since``."""
    rows = (
        Message.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day")
        .annotate(**_USAGE)
        .order_by("day")
    )
    return [UsageDay(**_usage(row)) for row in rows]


def usage_by_model(*, since: dt.datetime, limit: int = TOP_ROWS) -> list[dict[str, Any]]:
    """The models replies came from since ``since``, most tokens first."""
    rows = (
        Message.objects.filter(created_at__gte=since, role=Message.Role.ASSISTANT)
        .values("model")
        .annotate(**_USAGE)
        .order_by("-total_tokens_out", "model")[:limit]
    )
    return [_usage(row) for row in rows]


def usage_by_user(*, since: dt.datetime, limit: int = TOP_ROWS) -> list[dict[str, Any]]:
    """The users whose conversations used the most tokens since ``since``."""
    rows = (
        Message.objects.filter(created_at__gte=since)
        .values(user_id=F("conversation__owner_id"), username=F("conversation__owner__username"))
        .annotate(**_USAGE)
        .order_by("-total_tokens_out", "-total_tokens_in", "username")[:limit]
    )
    return [_usage(row) for row in rows]


# --- jobs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayCount:
    day: dt.date
    key: str
    count: int


def job_queue(*, staff: User) -> dict[str, Any]:
    """The queue's health now: the jobs API's statistics (counts by status and priority,
    oldest waiting, throughput, workers)."""
    return job_stats(user=staff)


def job_failures_daily(*, since: dt.datetime) -> list[DayCount]:
    """Jobs that failed for good (failed, dead) per UTC day of their end since ``since``."""
    rows = (
        Job.objects.filter(finished_at__gte=since, status__in=(JobStatus.FAILED, JobStatus.DEAD))
        .annotate(day=TruncDate("finished_at", tzinfo=dt.UTC))
        .values("day", "status")
        .annotate(count=Count("id"))
        .order_by("day", "status")
    )
    return [DayCount(r["day"], r["status"], r["count"]) for r in rows]


# --- webhooks --------------------------------------------------------------------------------
def deliveries_daily(*, since: dt.datetime) -> list[DayCount]:
    """Webhook deliveries (test sends excluded) per UTC day created and status."""
    rows = (
        Delivery.objects.filter(created_at__gte=since, is_test=False)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day", "status")
        .annotate(count=Count("id"))
        .order_by("day", "status")
    )
    return [DayCount(r["day"], r["status"], r["count"]) for r in rows]


def delivery_success(days: list[DayCount]) -> float | None:
    """Succeeded over finished (succeeded + failed) deliveries; None when none finished."""
    done = {DeliveryStatus.SUCCEEDED: 0, DeliveryStatus.FAILED: 0}
    for row in days:
        if row.key in done:
            done[row.key] += row.count
    total = sum(done.values())
    return done[DeliveryStatus.SUCCEEDED] / total if total else None


# --- knowledge -------------------------------------------------------------------------------
def documents_by_status() -> dict[str, int]:
    counts = dict.fromkeys(DocumentStatus.values, 0)
    for row in Document.objects.order_by().values("status").annotate(count=Count("id")):
        counts[row["status"]] = row["count"]
    return counts


@dataclass(frozen=True)
class IngestionDay:
    day: dt.date
    documents: int
    chunks: int
    seconds: float

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0


def ingestion_daily(*, since: dt.datetime) -> list[IngestionDay]:
    """Per UTC day: documents whose processing job succeeded, their chunks, and the time
    those jobs ran (chunks / seconds: the ingestion rate, parsing and embedding included)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (j.finished_at AT TIME ZONE 'UTC')::date AS day, count(*),
                   coalesce(sum(c.chunks), 0),
                   coalesce(sum(extract(epoch FROM j.finished_at - j.started_at)), 0)
            FROM jobs_job j
            JOIN knowledge_document d ON d.id::text = j.args->>'document_id'
            CROSS JOIN LATERAL (
                SELECT count(*) AS chunks FROM knowledge_chunk WHERE document_id = d.id
            ) c
            WHERE j.finished_at >= %s AND j.handler = %s AND j.status = %s
              AND d.status = %s AND j.started_at IS NOT NULL
            GROUP BY 1 ORDER BY 1
            """,
            [since, PROCESSING_HANDLER, JobStatus.SUCCEEDED, DocumentStatus.PROCESSED],
        )
        return [IngestionDay(day, n, int(chunks), float(secs)) for day, n, chunks, secs in cursor]


# --- agents ----------------------------------------------------------------------------------
def agent_feedback(*, since: dt.datetime, limit: int = TOP_ROWS) -> list[dict[str, Any]]:
    """Agents whose replies since ``since`` were rated: mean reward (0 to 1) and count,
    most rated first."""
    rows = (
        AgentInteraction.objects.filter(created_at__gte=since, feedback_reward__isnull=False)
        .values("agent_id")
        .annotate(ratings=Count("id"), mean=Avg("feedback_reward"))
        .order_by("-ratings", "agent_id")[:limit]
    )
    names = dict(
        Agent.objects.filter(pk__in=[r["agent_id"] for r in rows]).values_list("pk", "name")
    )
    return [{**row, "name": names.get(row["agent_id"], "?")} for row in rows]


# --- experiments -----------------------------------------------------------------------------
def running_experiments(*, limit: int = RUNNING_EXPERIMENTS_SHOWN) -> list[dict[str, Any]]:
    """The most recently started running experiments with their results (primary metrics
    first: the lift the dashboard shows), and how many run in all."""
    running = Experiment.objects.filter(status=Experiment.Status.RUNNING)
    shown = []
    for experiment in running.order_by("-started_at", "-created_at")[:limit]:
        results = experiment_results(experiment=experiment)
        primary = [m for m in results["metrics"] if m["role"] == "primary"] or results["metrics"]
        shown.append({"experiment": experiment, "results": {**results, "metrics": primary}})
    return shown


def experiments_running_count() -> int:
    return Experiment.objects.filter(status=Experiment.Status.RUNNING).count()


# --- the chat page ---------------------------------------------------------------------------
def chat_agents(*, user: User) -> QuerySet[Agent]:
    """The agents the operator may talk to, by name: staff, every active agent (shared,
    theirs, and users' private ones, by id: agents.runtime.agent_resolve); anyone else,
    the shared ones and their own."""
    if not user.is_staff:
        return agent_usable(user=user)
    return (
        Agent.objects.filter(status=Agent.Status.ACTIVE)
        .select_related("owner")
        .order_by("name", "id")
    )


def chat_conversations(*, user: User, limit: int = 20) -> QuerySet[Conversation]:
    """The operator's own recent conversations (the chat page's list)."""
    return (
        Conversation.objects.filter(owner=user)
        .select_related("agent")
        .order_by("-updated_at")[:limit]
    )
