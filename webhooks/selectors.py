"""Reads for webhooks: a user sees their own endpoints and deliveries (staff see all)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.models import User
from core.errors import NotFound
from webhooks.models import Delivery, DeliveryAttempt, Endpoint


def endpoint_list(*, user: User) -> QuerySet[Endpoint]:
    endpoints = Endpoint.objects.select_related("owner")
    return endpoints if user.is_staff else endpoints.filter(owner=user)


def endpoint_get(*, user: User, endpoint_id: Any) -> Endpoint:
    endpoint = endpoint_list(user=user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("Not found.")
    return endpoint


def delivery_list(
    *,
    user: User,
    endpoint_id: Any = None,
    status: str | None = None,
    event_type: str | None = None,
) -> QuerySet[Delivery]:
    deliveries = Delivery.objects.select_related("event", "endpoint")
    if not user.is_staff:
        deliveries = deliveries.filter(endpoint__owner=user)
    if endpoint_id is not None:
        deliveries = deliveries.filter(endpoint_id=endpoint_id)
    if status:
        deliveries = deliveries.filter(status=status)
    if event_type:
        deliveries = deliveries.filter(event_type=event_type)
    return deliveries


def delivery_get(*, user: User, delivery_id: Any) -> Delivery:
    delivery = delivery_list(user=user).filter(pk=delivery_id).first()
    if delivery is None:
        raise NotFound("Not found.")
    return delivery


def delivery_attempts(*, delivery: Delivery) -> QuerySet[DeliveryAttempt]:
    return delivery.attempts.order_by("number", "id")
