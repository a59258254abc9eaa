"""Plugins' failures, counted in PostgreSQL: a run of them disables the plugin everywhere."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from plugins.models import Plugin

logger = logging.getLogger("chatter.plugins")


def plugin_failure_record(*, plugin_id: str, point: str, error: str, timeout: bool) -> bool:
    """Count one failure (an exception or a timeout at ``point``); after
    CHATTER_PLUGIN_MAX_CONSECUTIVE_FAILURES in a row the plugin is disabled, audited and
    alerted on. Returns whether this failure disabled it."""
    from django.db.models import F, Value
    from django.db.models.functions import Greatest

    from accounts.services import log_action
    from core.events import alert_raise
    from plugins.services.lifecycle import state_bump

    threshold = settings.CHATTER_PLUGIN_MAX_CONSECUTIVE_FAILURES
    now = timezone.now()
    with transaction.atomic():
        updated = Plugin.objects.filter(pk=plugin_id).update(
            error_count=F("error_count") + 1,
            timeout_count=F("timeout_count") + (1 if timeout else 0),
            consecutive_failures=Greatest(F("consecutive_failures") + 1, Value(1)),
            last_error=error,
            last_error_at=now,
            last_error_point=point[:50],
        )
        if not updated:
            return False  # uninstalled meanwhile
        # Conditional: of two processes that see the threshold at once, one disables it.
        disabled = Plugin.objects.filter(
            pk=plugin_id, enabled=True, consecutive_failures__gte=threshold
        ).update(
            enabled=False,
            auto_disabled_at=now,
            disabled_reason=f"Disabled automatically after {threshold} consecutive failures "
            f"(the last in {point}: {error[:300]})",
            revision=F("revision") + 1,
        )
        if not disabled:
            return False
        plugin = Plugin.objects.get(pk=plugin_id)
        state_bump()
        log_action(
            actor=None,
            action="plugin.auto_disabled",
            target=plugin,
            details={"point": point, "error": error[:500], "consecutive_failures": threshold},
        )
        alert_raise(
            code="plugin_auto_disabled",
            message=f"The plugin {plugin.name} was disabled after {threshold} consecutive "
            f"failures: {error[:300]}",
            details={"plugin_id": str(plugin.pk), "plugin": plugin.name, "point": point},
        )
    logger.error("plugin %s disabled after %s consecutive failures", plugin.name, threshold)
    return True


def plugin_success_record(*, plugin_id: str, point: str) -> None:
    """A call that worked at the point of the last failure ends the run of consecutive
    failures (a write only when there is one). A success elsewhere does not: a plugin
    whose route always fails is disabled even while its middleware works."""
    Plugin.objects.filter(
        pk=plugin_id, consecutive_failures__gt=0, last_error_point=point[:50]
    ).update(consecutive_failures=0)
