"""The console's pages: Prometheus' scrape endpoint, and the admin's operator chat."""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts.authentication import bearer_token
from console import selectors
from conversations.models import Conversation
from conversations.selectors import conversation_get, message_list
from conversations.services import conversation_create
from core.client_ip import client_ip
from core.errors import ApplicationError, error_response
from datamgmt.models import ExportFormat, ExportScope
from datamgmt.selectors import export_list
from datamgmt.services.exports import export_request
from knowledge.selectors import document_list
from knowledge.services import document_upload

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@lru_cache(maxsize=4)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def scrape_refusal(request: HttpRequest) -> HttpResponse | None:
    """Why this request may not read the metrics (a 401 or 403 in the error envelope), or
    None. A configured token, when presented, must match; otherwise the client's address
    must be in CHATTER_METRICS_ALLOWED_NETWORKS (loopback by default)."""
    token = settings.CHATTER_METRICS_TOKEN
    presented = bearer_token(request)
    if token and presented is not None:
        if hmac.compare_digest(presented.encode(), token.encode()):
            return None
        return error_response(
            401,
            "invalid_token",
            "The metrics token is not the one configured.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    address = client_ip(request)
    networks = _networks(tuple(settings.CHATTER_METRICS_ALLOWED_NETWORKS))
    if address is not None and any(ipaddress.ip_address(address) in n for n in networks):
        return None
    return error_response(
        403,
        "permission_denied",
        "Metrics are served to the networks in CHATTER_METRICS_ALLOWED_NETWORKS"
        + (" or with the bearer token CHATTER_METRICS_TOKEN." if token else "."),
    )


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = scrape_refusal(request)
    if refusal is not None:
        return refusal
    from console.metrics import metrics_exposition

    response = HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response


@require_http_methods(["GET", "POST"])
def chat(request: HttpRequest, conversation_id: UUID | None = None) -> HttpResponse:
    """The operator chat: pick an agent to start a conversation (POST), or talk in one."""
    user = request.user
    if request.method == "POST":
        agent = get_object_or_404(
            selectors.chat_agents(user=user),  # type: ignore[arg-type]
            pk=request.POST.get("agent"),
        )
        try:
            conversation = conversation_create(
                owner=user,  # type: ignore[arg-type]
                agent=str(agent.pk),
                title=f"Operator chat with {agent.name}",
            )
        except ApplicationError as error:
            messages.error(request, error.message)
            return HttpResponseRedirect(reverse("admin:console_chat"))
        return HttpResponseRedirect(
            reverse("admin:console_chat_conversation", args=[conversation.pk])
        )
    conversation: Conversation | None = None
    if conversation_id is not None:
        conversation = conversation_get(user=user, conversation_id=conversation_id)  # type: ignore[arg-type]
        if conversation is None:
            return HttpResponse(status=404)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": conversation.title if conversation else "Operator chat",
        "agents": selectors.chat_agents(user=user),  # type: ignore[arg-type]
        "conversations": selectors.chat_conversations(user=user),  # type: ignore[arg-type]
        "conversation": conversation,
        "chat_messages": list(message_list(conversation=conversation)) if conversation else [],
        "may_send": conversation is not None and conversation.owner_id == user.pk,
        "url_template": reverse("admin:console_chat_conversation", args=[UUID(int=0)]),
    }
    return TemplateResponse(request, "admin/console/chat.html", context)


@require_http_methods(["GET", "POST"])
def operations(request: HttpRequest) -> HttpResponse:
    """Upload a document to the operator's knowledge base, or run an export of their data
    (the same services as the API's); the recent ones with their status and download."""
    user = request.user
    if request.method == "POST":
        try:
            if request.POST.get("operation") == "upload" and "file" in request.FILES:
                upload = request.FILES["file"]
                document, _ = document_upload(
                    owner=user,  # type: ignore[arg-type]
                    data=upload.read(),
                    filename=upload.name or "upload",
                    title=request.POST.get("title") or None,
                )
                messages.success(request, f"{document.title} uploaded: it is being processed.")
                return HttpResponseRedirect(
                    reverse("admin:knowledge_document_change", args=[document.pk])
                )
            if request.POST.get("operation") == "export":
                export = export_request(
                    owner=user,  # type: ignore[arg-type]
                    scope=request.POST.get("scope", ExportScope.USER),
                    format=request.POST.get("format", ExportFormat.JSON),
                )
                messages.success(request, f"Export {export.pk} queued.")
                return HttpResponseRedirect(reverse("admin:console_operations"))
            messages.error(request, "Choose a file to upload, or an export to run.")
        except ApplicationError as error:
            messages.error(request, error.message)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Uploads and exports",
        "documents": document_list(user=user).filter(owner=user)[:10],  # type: ignore[arg-type]
        "exports": export_list(user=user).filter(owner=user).order_by("-created_at")[:10],  # type: ignore[arg-type]
        "scopes": [(ExportScope.USER, ExportScope.USER.label)],
        "formats": ExportFormat.choices,
    }
    return TemplateResponse(request, "admin/console/operations.html", context)
