"""Objects for tests that walk every operation in the schema (authorization matrix, fuzzing)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import User
from accounts.services import api_key_create
from agents.models import Agent, AgentVariant
from conversations.models import Conversation, Message, ToolApproval
from datamgmt.models import Backup, Export, Restore, RetentionPolicy
from experiments.models import Experiment
from jobs.models import Job
from knowledge.models import ContentType, Document
from plugins.models import Plugin
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


def _variant(user: User, agent_id: str) -> str:
    return str(
        AgentVariant.objects.create(agent_id=agent_id, name="b", system_prompt="Be brief.").pk
    )


def _approval(user: User, conversation_id: str) -> str:
    Message.objects.create(
        conversation_id=conversation_id, position=0, role="user", content="What is 1+1?"
    )
    message = Message.objects.create(
        conversation_id=conversation_id, position=1, role="assistant", content=""
    )
    return str(
        ToolApproval.objects.create(
            conversation_id=conversation_id,
            message=message,
            tool_call_id="call_1",
            tool_name="calculator",
            args={"expression": "1+1"},
        ).pk
    )


def _export(user: User) -> str:
    return str(
        Export.objects.create(
            owner=user,
            scope="user",
            parameters={"user_id": user.pk},
            format="json",
            status="pending",
            expires_at=timezone.now() + timedelta(days=1),
        ).pk
    )


def _backup(user: User) -> str:
    return str(Backup.objects.create(type="full", status="complete", created_by=user).pk)


def _restore(user: User) -> str:
    backup = Backup.objects.create(type="full", status="complete", created_by=user)
    return str(
        Restore.objects.create(backup=backup, target_database=f"r_{uuid.uuid4().hex[:12]}").pk
    )


def _retention_policy(user: User) -> str:
    return str(
        RetentionPolicy.objects.create(
            name=f"old chats {uuid.uuid4().hex[:8]}", scope="conversations", age_days=365
        ).pk
    )


def _experiment(user: User) -> str:
    return str(
        Experiment.objects.create(
            owner=user, name="mine", key=f"exp-{uuid.uuid4().hex[:8]}", type="prompt"
        ).pk
    )


def _plugin(user: User) -> str:
    # A row, not an upload: the matrix needs an object (staff-only: others get 403).
    manifest = {
        "name": f"matrix_{uuid.uuid4().hex[:8]}",
        "version": "1.0.0",
        "description": "",
        "author": "",
        "license": "MIT",
        "type": "extension",
        "entry_point": "matrix_plugin.plugin:register",
        "capabilities": [],
        "permissions": [],
        "config_schema": {"type": "object"},
        "chatter_versions": ">=0",
    }
    return str(
        Plugin.objects.create(
            name=manifest["name"],
            version="1.0.0",
            type="extension",
            entry_point=manifest["entry_point"],
            chatter_versions=">=0",
            manifest=manifest,
            source="upload",
        ).pk
    )


# The collection segment before a path parameter → a factory for an object of that resource.
# Apps that add object endpoints add a factory here (the matrix test fails until they do).
# A nested resource's factory also takes the id of the object it belongs to (the path's
# previous parameter), so the owner's request would reach it and only ownership refuses.
FACTORIES: dict[str, Callable[..., str]] = {
    "conversations": _conversation,
    "messages": _message,
    "api-keys": _api_key,
    "jobs": _job,
    "documents": _document,
    "agents": _agent,
    "variants": _variant,
    "approvals": _approval,
    "exports": _export,
    "backups": _backup,
    "restores": _restore,
    "retention-policies": _retention_policy,
    "experiments": _experiment,
    "endpoints": _endpoint,
    "deliveries": _delivery,
    "plugins": _plugin,
}


@pytest.fixture
def object_factories() -> dict[str, Callable[..., str]]:
    return FACTORIES
