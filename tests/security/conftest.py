"""Objects for tests that walk every operation in the schema (authorization matrix, fuzzing)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

import pytest
from django.utils import timezone

from accounts.models import User
from accounts.services import api_key_create
from agents.models import Agent
from conversations.models import Conversation, Message
from jobs.models import Job
from knowledge.models import ContentType, Document
from webhooks.models import Delivery, Endpoint


def _conversation(user: User) -> str:
    return str(Conversation.objects.create(owner=user, title="mine").pk)


def _message(user: User) -> str:
    conversation = Conversation.objects.create(owner=user, title="mine", message_count=1)
    message = Message.objects.create(
        conversation=conversation, position=0, role="assistant", content="hello"
    )
    return str(message.pk)


def _job(user: User) -> str:
    # A row, not enqueue(): the matrix needs an object, not a worker running it.
    now = timezone.now()
    job = Job.objects.create(handler="echo", args={}, owner=user, available_at=now, rank_at=now)
    return str(job.pk)


def _document(user: User) -> str:
    body = f"notes of {user.username} {uuid.uuid4()}".encode()  # unique: owner+sha256 is
    return str(
        Document.objects.create(
            owner=user,
            title="mine",
            filename="mine.txt",
            content_type=ContentType.TEXT,
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            source=body,
        ).pk
    )


def _agent(user: User) -> str:
    return str(
        Agent.objects.create(
            owner=user, created_by=user, name="mine", slug=f"mine-{uuid.uuid4().hex[:8]}"
        ).pk
    )


def _webhook_endpoint(user: User) -> Endpoint:
    # A row, not endpoint_create(): no URL check, no outbound request.
    return Endpoint.objects.create(
        owner=user, name="mine", url="https://hooks.example.com/in", secret="whsec_dGVzdA=="
    )


def _endpoint(user: User) -> str:
    return str(_webhook_endpoint(user).pk)


def _delivery(user: User) -> str:
    from core.events import alert_raise

    event = alert_raise(code="matrix", message="an object to find", owner_id=user.pk)
    delivery = Delivery.objects.create(
        endpoint=_webhook_endpoint(user), event=event, event_type=event.type, status="failed"
    )
    return str(delivery.pk)


def _api_key(user: User) -> str:
    return str(api_key_create(user=user, name="victim")[0].pk)


# The collection segment before a path parameter → a factory for an object of that resource.
# Apps that add object endpoints add a factory here (the matrix test fails until they do).
FACTORIES: dict[str, Callable[[User], str]] = {
    "conversations": _conversation,
    "messages": _message,
    "api-keys": _api_key,
    "jobs": _job,
    "documents": _document,
    "agents": _agent,
    "endpoints": _endpoint,
    "deliveries": _delivery,
}


@pytest.fixture
def object_factories() -> dict[str, Callable[[User], str]]:
    return FACTORIES
