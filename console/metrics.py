"""Prometheus exposition: the business figures read from PostgreSQL at scrape time, and the
per-process samples (core.metrics) summed over every process on this host.

Why from the database: the queue, the deliveries and the usage are rows every web and job
worker writes; counting them when scraped is right however many processes or machines
there are, survives restarts, and costs the hot paths nothing. Their counters count from
00:00 UTC today (their ``_created`` sample says so): the rows they count are pruned after
days, and a total that shrank would read as a reset; today's rows are also the cheap ones
to count (the time indexes). ``increase()`` and ``rate()`` read them as usual. Every
instance reports the same global figures: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from jobs.models import FINISHED_STATUSES, JobPriority, JobStatus
from knowledge.models import DocumentStatus
from webhooks.models import DeliveryStatus

# A delivery's whole retry schedule is ~28 h: one that ended today was created within two
# days, so the created_at index bounds the scan.
_DELIVERY_LOOKBACK = dt.timedelta(days=2)


def _midnight() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class DatabaseCollector(Collector):
    """Queue depth, job outcomes, deliveries, documents, tokens and cost, from the tables."""

    def collect(self) -> Iterator[Metric]:
        since = _midnight()
        created = since.timestamp()
        with connection.cursor() as cursor:
            yield from self._jobs(cursor, since, created)
            yield from self._webhooks(cursor, since, created)
            yield from self._knowledge(cursor)
            yield from self._usage(cursor, since, created)

    def _jobs(self, cursor, since: dt.datetime, created: float) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        depth = GaugeMetricFamily(
            "chatter_jobs_queue_depth",
            "Jobs waiting (pending: due; scheduled: a later start or a retry's backoff) or "
            "running, by priority.",
            labels=["priority", "status"],
        )
        cursor.execute(
            "SELECT priority, status, count(*) FROM jobs_job "
            "WHERE status IN ('pending', 'scheduled', 'running') GROUP BY 1, 2"
        )
        counts = {(p, s): n for p, s, n in cursor.fetchall()}
        for priority in JobPriority.values:
            for status in (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING):
                depth.add_metric([priority, status], counts.get((priority, status), 0))
        yield depth

        cursor.execute(
            "SELECT greatest(0, extract(epoch FROM clock_timestamp() - min(available_at))) "
            "FROM jobs_job WHERE status = 'pending'"
        )
        (oldest,) = cursor.fetchone()
        age = GaugeMetricFamily(
            "chatter_jobs_oldest_pending_age_seconds",
            "How long the oldest due job has waited (0 with none waiting).",
        )
        age.add_metric([], float(oldest or 0))
        yield age

        finished = CounterMetricFamily(
            "chatter_jobs_finished",
            "Jobs that ended since 00:00 UTC, by priority and outcome.",
            labels=["priority", "outcome"],
        )
        cursor.execute(
            "SELECT priority, status, count(*) FROM jobs_job WHERE finished_at >= %s GROUP BY 1, 2",
            [since],
        )
        counts = {(p, s): n for p, s, n in cursor.fetchall()}
        for priority in JobPriority.values:
            for status in FINISHED_STATUSES:
                finished.add_metric(
                    [priority, status], counts.get((priority, status), 0), created=created
                )
        yield finished

    def _webhooks(self, cursor, since: dt.datetime, created: float) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        cursor.execute(
            """
            SELECT
              count(*) FILTER (WHERE status = 'succeeded' AND delivered_at >= %(since)s),
              count(*) FILTER (WHERE status = 'failed' AND updated_at >= %(since)s),
              count(*) FILTER (WHERE status = 'pending'),
              count(*) FILTER (WHERE status = 'sending')
            FROM webhooks_delivery
            WHERE (created_at >= %(lookback)s OR status IN ('pending', 'sending'))
              AND NOT is_test
            """,
            {"since": since, "lookback": since - _DELIVERY_LOOKBACK},
        )
        succeeded, failed, pending, sending = cursor.fetchone()
        done = CounterMetricFamily(
            "chatter_webhook_deliveries",
            "Webhook deliveries (test sends left out) that ended since 00:00 UTC, by outcome.",
            labels=["outcome"],
        )
        done.add_metric([DeliveryStatus.SUCCEEDED], succeeded, created=created)
        done.add_metric([DeliveryStatus.FAILED], failed, created=created)
        yield done
        waiting = GaugeMetricFamily(
            "chatter_webhook_deliveries_in_flight",
            "Deliveries waiting for an attempt (pending) or being sent (sending).",
            labels=["status"],
        )
        waiting.add_metric([DeliveryStatus.PENDING], pending)
        waiting.add_metric([DeliveryStatus.SENDING], sending)
        yield waiting

    def _knowledge(self, cursor) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        cursor.execute("SELECT status, count(*) FROM knowledge_document GROUP BY 1")
        counts = dict(cursor.fetchall())
        documents = GaugeMetricFamily(
            "chatter_knowledge_documents", "Documents by processing status.", labels=["status"]
        )
        for status in DocumentStatus.values:
            documents.add_metric([status], counts.get(status, 0))
        yield documents

    def _usage(self, cursor, since: dt.datetime, created: float) -> Iterator[Metric]:  # type: ignore[no-untyped-def]
        cursor.execute(
            "SELECT model, coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), "
            "coalesce(sum(cost), 0), count(*) "
            "FROM conversations_message WHERE created_at >= %s AND role = 'assistant' "
            "GROUP BY 1 ORDER BY 1",
            [since],
        )
        rows = cursor.fetchall()
        tokens = CounterMetricFamily(
            "chatter_llm_tokens",
            "Model tokens of the replies started since 00:00 UTC, by model and direction.",
            labels=["model", "direction"],
        )
        cost = CounterMetricFamily(
            "chatter_llm_cost",
            "Cost (the price table's currency, USD by default) of those replies, by model.",
            labels=["model"],
        )
        replies = CounterMetricFamily(
            "chatter_llm_replies", "Replies started since 00:00 UTC, by model.", labels=["model"]
        )
        for model, tokens_in, tokens_out, spent, count in rows:
            tokens.add_metric([model, "in"], tokens_in, created=created)
            tokens.add_metric([model, "out"], tokens_out, created=created)
            cost.add_metric([model], float(spent), created=created)
            replies.add_metric([model], count, created=created)
        yield tokens
        yield cost
        yield replies


def metrics_exposition() -> bytes:
    """The text format of every metric: this host's processes' files and the database's."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(settings.PROMETHEUS_MULTIPROC_DIR))
    registry.register(DatabaseCollector())
    return generate_latest(registry)
