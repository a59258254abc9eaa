"""The admin index's dashboard: the console's selectors drawn by core.charts, every dot and
bar a link to the filtered admin list behind it."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils.safestring import SafeString

from accounts.models import User
from console import selectors
from core.charts import COLOURS, Bar, Point, Segment, Series, bars_svg, daily_lines_svg
from experiments.charts import lift_chart_svg
from jobs.models import JobPriority, JobStatus
from knowledge.models import DocumentStatus
from webhooks.models import DeliveryStatus

# One colour per state, the same in every plot.
STATE_COLOURS = {
    "pending": COLOURS[4],
    "scheduled": COLOURS[1],
    "running": COLOURS[2],
    "processing": COLOURS[2],
    "sending": COLOURS[2],
    "succeeded": COLOURS[0],
    "processed": COLOURS[0],
    "failed": COLOURS[5],
    "dead": COLOURS[3],
}


def changelist(admin_model: str, /, **filters: Any) -> str:
    """The admin list of ``app_model`` filtered by ``filters`` (field lookups)."""
    url = reverse(f"admin:{admin_model}_changelist")
    query = {k: v for k, v in filters.items() if v is not None}
    return f"{url}?{urlencode(query)}" if query else url


def _utc(day: dt.date) -> str:
    # A whole UTC instant: a bare date would be read as a naive local datetime.
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).isoformat()


def _day_range(day: dt.date) -> dict[str, str]:
    return {"gte": _utc(day), "lt": _utc(day + dt.timedelta(days=1))}


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _money(value: Decimal | float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _count_lines(
    rows: Iterable[selectors.DayCount],
    keys: Iterable[str],
    *,
    first: dt.date,
    last: dt.date,
    what: str,
    href: Any,
) -> list[Series]:
    """A line per key over every day of the window (days without rows count 0)."""
    counts: dict[str, dict[dt.date, int]] = defaultdict(dict)
    for row in rows:
        counts[row.key][row.day] = row.count
    series = []
    for key in keys:
        per_day = counts.get(key, {})
        total = sum(per_day.values())
        series.append(
            Series(
                name=key,
                legend=f"{key}: {total}",
                colour=STATE_COLOURS.get(key),
                points=[
                    Point(
                        day=day,
                        value=per_day.get(day, 0),
                        tooltip=f"{day:%Y-%m-%d} · {key}: {per_day.get(day, 0)} {what}",
                        href=href(key, day),
                        radius=2.5,
                    )
                    for day in _days(first, last)
                ],
            )
        )
    return series


def _tokens_bar(row: dict[str, Any], *, label: str, href: str, count: str) -> Bar:
    """A usage row (tokens in and out, cost) as a bar of its two token counts."""
    return Bar(
        label=label,
        href=href,
        text=f"{row['tokens_in'] + row['tokens_out']:,} tokens · {count} · {_money(row['cost'])}",
        segments=[
            Segment(row["tokens_in"], f"{row['tokens_in']:,} tokens in"),
            Segment(row["tokens_out"], f"{row['tokens_out']:,} tokens out"),
        ],
    )


def usage_plots(*, since: dt.datetime, first: dt.date, last: dt.date) -> dict[str, Any]:
    days = {row.day: row for row in selectors.usage_daily(since=since)}

    def messages_on(day: dt.date) -> str:
        span = _day_range(day)
        return changelist(
            "conversations_message", created_at__gte=span["gte"], created_at__lt=span["lt"]
        )

    def line(name: str, value: Any, text: Any, colour: str) -> Series:
        return Series(
            name=name,
            colour=colour,
            legend=f"{name}: {text(sum(value(days[d]) for d in days))}",
            points=[
                Point(
                    day=day,
                    value=float(value(days[day])) if day in days else 0.0,
                    tooltip=f"{day:%Y-%m-%d} · {name}: "
                    f"{text(value(days[day])) if day in days else text(0)}",
                    href=messages_on(day),
                    radius=2.5,
                )
                for day in _days(first, last)
            ],
        )

    window = dict(start=first, end=last, empty="No messages in the last 30 days.")
    messages = daily_lines_svg(
        [
            line("messages", lambda r: r.messages, str, COLOURS[0]),
            line("replies", lambda r: r.replies, str, COLOURS[1]),
        ],
        css_class="console-plot usage-messages",
        title="Messages per day",
        caption="messages per UTC day (all roles) and the assistant's replies among them",
        **window,
    )
    tokens = daily_lines_svg(
        [
            line("tokens in", lambda r: r.tokens_in, lambda v: f"{v:,}", COLOURS[0]),
            line("tokens out", lambda r: r.tokens_out, lambda v: f"{v:,}", COLOURS[1]),
        ],
        css_class="console-plot usage-tokens",
        title="Tokens per day",
        caption="prompt (in) and completion (out) tokens per UTC day",
        **window,
    )
    unpriced = sum(r.unpriced for r in days.values())
    cost = daily_lines_svg(
        [line("cost", lambda r: r.cost, _money, COLOURS[2])],
        css_class="console-plot usage-cost",
        title="Cost per day",
        caption="cost per UTC day at the admin's prices, else the price database's"
        + (f"; {unpriced} replies from models with no known price" if unpriced else ""),
        y_format=lambda v: _money(max(v, 0)),
        **window,
    )
    by_model = selectors.usage_by_model(since=since)
    models = bars_svg(
        [
            _tokens_bar(
                row,
                label=row["model"] or "(none)",
                href=changelist(
                    "conversations_message", model=row["model"], created_at__gte=_utc(first)
                ),
                count=f"{row['replies']} replies",
            )
            for row in by_model
        ],
        css_class="console-plot usage-models",
        title="Usage per model",
        caption="the last 30 days, most tokens first",
        legend=[("tokens in", COLOURS[0]), ("tokens out", COLOURS[1])],
        empty="No replies in the last 30 days.",
    )
    by_user = selectors.usage_by_user(since=since)
    users = bars_svg(
        [
            _tokens_bar(
                row,
                label=row["username"],
                href=changelist("conversations_conversation", owner__id__exact=row["user_id"]),
                count=f"{row['messages']} messages",
            )
            for row in by_user
        ],
        css_class="console-plot usage-users",
        title="Usage per user",
        caption="the last 30 days, the 10 users with the most tokens; a bar opens their "
        "conversations",
        legend=[("tokens in", COLOURS[0]), ("tokens out", COLOURS[1])],
        empty="No messages in the last 30 days.",
    )
    totals = {
        "messages": sum(r.messages for r in days.values()),
        "tokens": sum(r.tokens_in + r.tokens_out for r in days.values()),
        "cost": _money(sum((r.cost for r in days.values()), Decimal(0))),
    }
    return {
        "messages": messages,
        "tokens": tokens,
        "cost": cost,
        "models": models,
        "users": users,
        "totals": totals,
    }


def jobs_plots(*, staff: User, since: dt.datetime, first: dt.date, last: dt.date) -> dict[str, Any]:
    stats = selectors.job_queue(staff=staff)
    waiting = (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING)
    backlog = bars_svg(
        [
            Bar(
                label=JobPriority(priority).label,
                href=changelist(
                    "jobs_job", priority__exact=priority, status__in="pending,scheduled,running"
                ),
                text=" · ".join(f"{counts[s]} {s}" for s in waiting),
                segments=[
                    Segment(
                        counts[s],
                        f"{counts[s]} {s} {priority} job(s)",
                        href=changelist("jobs_job", priority__exact=priority, status__exact=s),
                        colour=STATE_COLOURS[s],
                    )
                    for s in waiting
                ],
            )
            for priority, counts in stats["by_priority"].items()
        ],
        css_class="console-plot jobs-backlog",
        title="Job backlog by priority",
        caption="jobs waiting (pending: due; scheduled: a later start or a retry's backoff) "
        "and running, per priority",
        legend=[(s, STATE_COLOURS[s]) for s in waiting],
    )

    def failed_on(status: str, day: dt.date) -> str:
        span = _day_range(day)
        return changelist(
            "jobs_job",
            status__exact=status,
            finished_at__gte=span["gte"],
            finished_at__lt=span["lt"],
        )

    failures = daily_lines_svg(
        _count_lines(
            selectors.job_failures_daily(since=since),
            (JobStatus.DEAD, JobStatus.FAILED),
            first=first,
            last=last,
            what="job(s)",
            href=failed_on,
        ),
        start=first,
        end=last,
        css_class="console-plot jobs-failures",
        title="Job failures per day",
        caption="jobs that ended failed (a permanent error) or dead (every attempt failed) "
        "per UTC day",
        y_format=lambda v: f"{v:.3g}",
    )
    return {
        "stats": stats,
        "backlog": backlog,
        "failures": failures,
        "dead_url": changelist("jobs_job", status__exact=JobStatus.DEAD),
        "pending_url": changelist("jobs_job", status__exact=JobStatus.PENDING),
    }


def webhooks_plots(*, since: dt.datetime, first: dt.date, last: dt.date) -> dict[str, Any]:
    rows = selectors.deliveries_daily(since=since)

    def deliveries_on(status: str, day: dt.date) -> str:
        span = _day_range(day)
        return changelist(
            "webhooks_delivery",
            status__exact=status,
            is_test__exact=0,
            created_at__gte=span["gte"],
            created_at__lt=span["lt"],
        )

    success = selectors.delivery_success(rows)
    plot = daily_lines_svg(
        _count_lines(
            rows,
            (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.PENDING),
            first=first,
            last=last,
            what="deliveries",
            href=deliveries_on,
        ),
        start=first,
        end=last,
        css_class="console-plot webhooks-deliveries",
        title="Webhook deliveries per day",
        caption="deliveries per UTC day created, by status now (test sends left out)"
        + (f"; {success:.1%} of finished ones succeeded" if success is not None else ""),
    )
    return {
        "deliveries": plot,
        "success": success,
        "failed_url": changelist("webhooks_delivery", status__exact=DeliveryStatus.FAILED),
    }


def knowledge_plots(*, since: dt.datetime, first: dt.date, last: dt.date) -> dict[str, Any]:
    counts = selectors.documents_by_status()
    statuses = bars_svg(
        [
            Bar(
                label=DocumentStatus(status).label,
                href=changelist("knowledge_document", status__exact=status),
                text=str(count),
                segments=[Segment(count, f"{count} {status}", colour=STATE_COLOURS.get(status))],
            )
            for status, count in counts.items()
        ],
        css_class="console-plot knowledge-documents",
        title="Documents by status",
        caption="every document now",
    )
    days = selectors.ingestion_daily(since=since)

    def documents_on(day: dt.date) -> str:
        span = _day_range(day)
        return changelist(
            "knowledge_document", processed_at__gte=span["gte"], processed_at__lt=span["lt"]
        )

    rate = daily_lines_svg(
        [
            Series(
                name="chunks/s",
                legend=f"chunks/s: {sum(d.chunks for d in days) / max(sum(d.seconds for d in days), 1e-9):.1f}"
                if days
                else "chunks/s",
                points=[
                    Point(
                        day=d.day,
                        value=d.chunks_per_second,
                        tooltip=f"{d.day:%Y-%m-%d}: {d.chunks} chunks of {d.documents} "
                        f"document(s) in {d.seconds:.1f} s of processing "
                        f"({d.chunks_per_second:.1f} chunks/s)",
                        href=documents_on(d.day),
                        label=str(d.documents),
                    )
                    for d in days
                ],
            )
        ],
        start=first,
        end=last,
        css_class="console-plot knowledge-ingestion",
        title="Ingestion rate per day",
        caption="chunks per second of processing job (parse, split, embed, store) per UTC "
        "day; figures: documents",
        empty="No document processed in the last 30 days.",
    )
    return {"documents": statuses, "ingestion": rate, "counts": counts}


def agents_plot(*, since: dt.datetime) -> SafeString:
    rows = selectors.agent_feedback(since=since)
    return bars_svg(
        [
            Bar(
                label=row["name"],
                href=changelist("agents_agentinteraction", agent__id__exact=row["agent_id"]),
                text=f"{row['mean']:.2f} over {row['ratings']} rating(s)",
                segments=[Segment(row["mean"], f"mean reward {row['mean']:.3f}")],
            )
            for row in rows
        ],
        css_class="console-plot agents-feedback",
        title="Agents' feedback",
        caption="mean reward (0 to 1) of the replies of the last 30 days that were rated",
        scale=1.0,
        empty="No rated replies in the last 30 days.",
    )


def experiments_plots() -> list[dict[str, Any]]:
    return [
        {
            "experiment": item["experiment"],
            "lift": lift_chart_svg(item["results"]),
            "url": reverse("admin:experiments_experiment_results", args=[item["experiment"].pk]),
            "units": item["results"]["units"],
        }
        for item in selectors.running_experiments()
    ]


def dashboard(*, staff: User) -> dict[str, Any]:
    """Every plot of the dashboard, for the admin index's template."""
    since, first, last = selectors.dashboard_window()
    return {
        "first": first,
        "last": last,
        "usage": usage_plots(since=since, first=first, last=last),
        "jobs": jobs_plots(staff=staff, since=since, first=first, last=last),
        "webhooks": webhooks_plots(since=since, first=first, last=last),
        "knowledge": knowledge_plots(since=since, first=first, last=last),
        "agents": agents_plot(since=since),
        "experiments": experiments_plots(),
        "experiments_running": selectors.experiments_running_count(),
        "experiments_url": changelist("experiments_experiment", status__exact="running"),
    }
