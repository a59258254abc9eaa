"""Writes for webhooks: endpoints (create, change, rotate the secret, test), redeliveries, the
event subscriber that turns events into deliveries, and waking the delivery job.
Sending itself is in webhooks.delivery."""

from __future__ import annotations

from webhooks.services.deliveries import (
    deliveries_create_for_events,
    deliveries_redeliver_failed,
    delivery_redeliver,
    webhooks_prune,
)
from webhooks.services.endpoints import (
    EDITABLE_FIELDS,
    HEADER_NAME_PATTERN,
    HEADER_VALUE_PATTERN,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_OVERLAP_SECONDS,
    MAX_TIMEOUT_SECONDS,
    RESERVED_HEADERS,
    endpoint_create,
    endpoint_delete,
    endpoint_fields_check,
    endpoint_rotate_secret,
    endpoint_test,
    endpoint_update,
    endpoint_url_check,
    subscribable_event_types,
)
from webhooks.services.wake import (
    DELIVER_HANDLER,
    deliver_job_timeout,
    delivery_jobs_claiming,
    webhooks_wake,
    webhooks_wake_for_events,
)

__all__ = [
    "DELIVER_HANDLER",
    "EDITABLE_FIELDS",
    "HEADER_NAME_PATTERN",
    "HEADER_VALUE_PATTERN",
    "MAX_HEADERS",
    "MAX_HEADER_VALUE",
    "MAX_OVERLAP_SECONDS",
    "MAX_TIMEOUT_SECONDS",
    "RESERVED_HEADERS",
    "deliver_job_timeout",
    "deliveries_create_for_events",
    "deliveries_redeliver_failed",
    "delivery_jobs_claiming",
    "delivery_redeliver",
    "endpoint_create",
    "endpoint_delete",
    "endpoint_fields_check",
    "endpoint_rotate_secret",
    "endpoint_test",
    "endpoint_update",
    "endpoint_url_check",
    "subscribable_event_types",
    "webhooks_prune",
    "webhooks_wake",
    "webhooks_wake_for_events",
]
