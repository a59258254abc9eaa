"""The webhooks app's own event type: the test send (never broadcast). Deliveries that fail
for good raise the kernel's ``system.alert`` (core.events.alert_raise)."""

from __future__ import annotations

from core.events import STRING, UUID, event_type_register, object_schema

TEST_EVENT = "webhook.test"

event_type_register(
    TEST_EVENT,
    schema=object_schema({"endpoint_id": UUID, "message": STRING}),
    description="Sent by POST webhooks/endpoints/{id}/test/ to that endpoint only (it cannot be "
    "subscribed to).",
    broadcast=False,
)
