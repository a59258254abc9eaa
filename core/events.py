"""The event registry and its outbox: how apps tell the rest of the platform what happened.

Three registries, filled from above (the kernel imports no app):

- **event types** (``event_type_register``): each app registers the events it emits, with a
  JSON Schema of their ``data``, in its own ``events.py`` imported from its
  ``AppConfig.ready``. ``webhooks/event-types/`` lists them.
- **subscribers** (``subscriber_register``): webhooks now, plugins later. A subscriber is
  handed batches of committed events by the dispatcher, inside the dispatcher's transaction:
  what it writes there commits with the mark that the events were dispatched, so an event is
  handed to it at least once and its rows for the event exist exactly once if it writes
  them idempotently (webhooks: one delivery per endpoint and event, a unique constraint).
- **wakers** (``waker_register``): called after a transaction that emitted events commits,
  so that a dispatcher runs soon (webhooks enqueues its delivery job). A waker that fails
  costs latency only: the periodic dispatcher (webhooks' clock step) finds the events.

``event_emit`` writes an Event row through the caller's connection, **in the caller's
transaction**: a rollback emits nothing; a crash after the commit loses nothing, since the
row is there for the dispatcher (``events_dispatch``: ``SELECT ... FOR UPDATE SKIP LOCKED``,
so any number of dispatchers may run). Pass ids and plain values in ``data``; it is
validated against the type's schema, so a payload that breaks its contract fails the emit
(and its transaction) in the tests that cover each emit point, never a receiver.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from core.models import Event

logger = logging.getLogger("chatter.events")

# An event whose subscribers keep raising is given up after this many dispatches (its row
# keeps the error), so that one bad event never holds the others back.
MAX_DISPATCH_ATTEMPTS = 5


class EventInvalid(ValueError):
    """An emit that breaks the registry's contract (unknown type, data off its schema): a bug
    at the emit point, raised so that its transaction rolls back and its test fails."""


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    schema: dict[str, Any]  # JSON Schema (2020-12) of the event's `data`
    # False: the event is recorded (and may be delivered by whoever created it: webhooks'
    # test send) but never handed to subscribers, nor subscribable.
    broadcast: bool = True
    _validator: list[Any] = field(default_factory=list, repr=False, compare=False)

    def validate(self, data: Any) -> None:
        if not self._validator:
            # jsonschema loads with the first emit, not at django.setup() (start-up time).
            from jsonschema import Draft202012Validator

            Draft202012Validator.check_schema(self.schema)
            self._validator.append(Draft202012Validator(self.schema))
        errors = sorted(self._validator[0].iter_errors(data), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(part) for part in errors[0].path) or "(data)"
            raise EventInvalid(f"{self.name}: {where}: {errors[0].message}")


@dataclass(frozen=True)
class Subscriber:
    name: str
    handle: Callable[[list[Event]], None]


# Pieces of payload schemas, for the apps' events.py.
DATETIME: dict[str, Any] = {"type": "string", "format": "date-time"}
UUID: dict[str, Any] = {"type": "string", "format": "uuid"}
NULLABLE_INT: dict[str, Any] = {"type": ["integer", "null"]}
STRING: dict[str, Any] = {"type": "string"}


def object_schema(
    properties: dict[str, Any], *, optional: tuple[str, ...] = (), description: str = ""
) -> dict[str, Any]:
    """A closed object schema: every property required unless named in ``optional``."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


_types: dict[str, EventType] = {}
_subscribers: dict[str, Subscriber] = {}
_wakers: dict[str, Callable[[], None]] = {}


def event_type_register(
    name: str, *, schema: dict[str, Any], description: str, broadcast: bool = True
) -> EventType:
    """Declare an event type and the JSON Schema of its ``data`` (idempotent per name)."""
    existing = _types.get(name)
    spec = EventType(name=name, description=description, schema=schema, broadcast=broadcast)
    if existing is not None and (existing.schema, existing.broadcast) != (schema, broadcast):
        raise ValueError(f"event type {name!r} is already registered with another schema")
    _types.setdefault(name, spec)
    return _types[name]


def event_types() -> list[EventType]:
    return [_types[name] for name in sorted(_types)]


def event_type_get(name: str) -> EventType | None:
    return _types.get(name)


def subscriber_register(name: str, handle: Callable[[list[Event]], None]) -> None:
    """``handle(events)`` is called with each batch of committed events, inside the
    dispatcher's transaction (see the module's docstring). Quick and idempotent, please."""
    _subscribers[name] = Subscriber(name=name, handle=handle)


def waker_register(name: str, wake: Callable[[], None]) -> None:
    """``wake()`` is called after each commit of a transaction that emitted events."""
    _wakers[name] = wake


def _checked(type: str, data: dict[str, Any]) -> tuple[EventType, dict[str, Any]]:
    spec = _types.get(type)
    if spec is None:
        raise EventInvalid(f"unknown event type {type!r}; register it with event_type_register")
    # What is stored is plain JSON (ids, dates as strings): what every receiver will get.
    plain = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    spec.validate(plain)
    return spec, plain


def _wake_on_commit() -> None:
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        entry[1] is events_wake for entry in connection.run_on_commit
    ):
        return  # one wake per transaction, however many events it emits
    transaction.on_commit(events_wake)


def event_emit(*, type: str, data: dict[str, Any], owner_id: int | None = None) -> Event:
    """Record that ``type`` happened, in the caller's transaction (see the module's doc).

    ``owner_id`` is the user whose object it is about (their webhooks receive it); None for
    system events. Raises EventInvalid for an unknown type or data off its schema."""
    spec, plain = _checked(type, data)
    event = Event.objects.create(
        type=type,
        data=plain,
        owner_id=owner_id,
        dispatched_at=None if spec.broadcast else timezone.now(),
    )
    if spec.broadcast:
        _wake_on_commit()
    return event


def events_wake() -> None:
    """Tell every registered waker that committed events wait (after a commit)."""
    for name, wake in list(_wakers.items()):
        try:
            wake()
        except Exception:  # latency only: the periodic dispatcher will find the events
            logger.exception("event waker %s failed", name)


def _hand_over(events: list[Event]) -> None:
    with transaction.atomic():  # a savepoint: a failing batch leaves nothing behind
        for subscriber in list(_subscribers.values()):
            subscriber.handle(events)


def events_dispatch(*, limit: int = 500) -> int:
    """Hand committed, undispatched events (oldest first, at most ``limit``) to every
    subscriber and mark them dispatched, in one transaction. Returns how many were marked;
    ``limit`` means more may wait."""
    now = timezone.now()
    with transaction.atomic():
        events = list(
            Event.objects.select_for_update(skip_locked=True)
            .filter(dispatched_at__isnull=True)
            .order_by("id")[:limit]
        )
        if not events:
            return 0
        try:
            _hand_over(events)
        except Exception:
            logger.exception("event subscribers failed on a batch; handing events one by one")
        else:
            Event.objects.filter(pk__in=[e.pk for e in events]).update(dispatched_at=now)
            return len(events)
        # One at a time, so that only the event a subscriber chokes on waits.
        dispatched = 0
        for event in events:
            try:
                _hand_over([event])
            except Exception as exc:
                attempts = event.dispatch_attempts + 1
                logger.exception("event %s (%s): a subscriber failed", event.pk, event.type)
                Event.objects.filter(pk=event.pk).update(
                    dispatch_attempts=attempts,
                    dispatch_error=f"{type(exc).__name__}: {exc}"[:2000],
                    dispatched_at=now if attempts >= MAX_DISPATCH_ATTEMPTS else None,
                )
                continue
            Event.objects.filter(pk=event.pk).update(dispatched_at=now)
            dispatched += 1
        return dispatched


def events_undispatched() -> bool:
    """Whether committed events wait for the dispatcher (one probe of a partial index)."""
    return Event.objects.filter(dispatched_at__isnull=True).exists()


# --- system.alert: the kernel's own event type, so that any app may raise one ---------------
ALERT_LEVELS = ("warning", "error", "critical")

event_type_register(
    "system.alert",
    schema=object_schema(
        {
            "level": {"enum": list(ALERT_LEVELS)},
            "code": {**STRING, "pattern": "^[a-z0-9_.]+$"},
            "message": STRING,
            "details": {"type": "object"},
        },
        description="details names what the alert is about (e.g. endpoint_id, delivery_id).",
    ),
    description="Something needs an operator's attention: a webhook delivery failed for good, "
    "an endpoint was disabled, ... (an alert about one of your endpoints is not sent to it).",
)


def alert_raise(
    *,
    code: str,
    message: str,
    level: str = "error",
    owner_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> Event:
    """Emit a ``system.alert`` (in the caller's transaction). ``owner_id``: the user it
    concerns (their endpoints receive it), None for operators only."""
    return event_emit(
        type="system.alert",
        data={"level": level, "code": code, "message": message, "details": details or {}},
        owner_id=owner_id,
    )
