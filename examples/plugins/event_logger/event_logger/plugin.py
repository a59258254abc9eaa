"""Notes every event in the plugin's own store (``ctx.data_*``), idempotently: the platform
hands events over at least once, so a note is keyed by the event's id and counted only
when it is new."""

from __future__ import annotations

from typing import Any

NOTE = "note:"
COUNT = "count:"


def on_event(ctx: Any, event: dict[str, Any]) -> None:
    wanted = ctx.config.get("event_types") or []
    if wanted and event["type"] not in wanted:
        return
    note = {"type": event["type"], "at": event["timestamp"], "owner_id": event["owner_id"]}
    if ctx.data_add(NOTE + event["id"], note):
        ctx.data_incr(COUNT + event["type"])


def stats(ctx: Any, request: Any) -> dict[str, Any]:
    counts = {key.removeprefix(COUNT): value for key, value in ctx.data_items(COUNT).items()}
    return {"counts": dict(sorted(counts.items())), "total": sum(counts.values())}


def notes(ctx: Any, request: Any) -> list[dict[str, Any]]:
    items = ctx.data_items(NOTE)
    latest = sorted(items.items(), key=lambda kv: kv[1]["at"], reverse=True)
    return [{"event_id": key.removeprefix(NOTE), **value} for key, value in latest[:100]]


def prune(ctx: Any, job: Any) -> dict[str, int]:
    """Keep the newest max_notes notes (the counts stay)."""
    keep = int(ctx.config.get("max_notes", 1000))
    items = sorted(ctx.data_items(NOTE).items(), key=lambda kv: kv[1]["at"], reverse=True)
    for key, _ in items[keep:]:
        ctx.data_delete(key)
    return {"removed": max(0, len(items) - keep)}


def health(ctx: Any) -> dict[str, Any]:
    return {"notes": len(ctx.data_items(NOTE))}


def register(plugin: Any) -> None:
    plugin.subscriber(on_event)
    plugin.route("stats", stats)
    plugin.route("notes", notes, staff_only=True)
    plugin.job_handler("prune", func=prune, timeout=120, description="Prune old event notes.")
    plugin.health_check(health)
