"""The kernel's one table of its own: the event outbox (see core.events)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def event_id_new() -> str:
    """``evt_`` + 26 characters (a ULID: 48 bits of milliseconds, 80 random bits), so ids
    sort by creation time (the table needs no index of its own on it) and are unguessable."""
    return _ulid((int(time.time() * 1000) << 80) | secrets.randbits(80))


def event_id_floor(moment: datetime) -> str:
    """The smallest id an event created at ``moment`` can have: ``id < event_id_floor(t)``
    selects the events created before ``t``."""
    return _ulid(int(moment.timestamp() * 1000) << 80)


class Event(models.Model):
    """One domain event, written in the transaction of the change that caused it: a rollback
    leaves no event, a crash after the commit loses none (the dispatcher finds it)."""

    id = models.CharField(primary_key=True, max_length=40, default=event_id_new, editable=False)
    type = models.CharField(max_length=100)
    # The user whose object the event is about (None: a system event). A plain id, not a
    # foreign key: the kernel knows no app, and an event outlives nothing it describes.
    owner_id = models.BigIntegerField(null=True, blank=True)
    data = models.JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now)
    # Set once every subscriber has been handed the event (or it was not for them).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatch_attempts = models.PositiveSmallIntegerField(default=0)
    dispatch_error = models.TextField(blank=True)

    class Meta:
        # Ids sort by creation time: the primary key orders and bounds events by age, so
        # each event (an insert, then its dispatch's update) maintains two indexes only.
        ordering = ["-id"]
        indexes = [
            # The dispatcher's queue: a tiny partial index, empty when it keeps up.
            models.Index(
                fields=["id"],
                name="core_event_undispatched_idx",
                condition=Q(dispatched_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.pk}"

    def as_payload(self) -> dict[str, object]:
        """The event as subscribers and webhook receivers see it: {id, type, timestamp, data}."""
        return {
            "id": self.pk,
            "type": self.type,
            "timestamp": self.created_at.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }
