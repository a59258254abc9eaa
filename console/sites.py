"""Chatter's admin site: Django's, with the dashboard on its index and the operator chat."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path


class ConsoleAdminSite(admin.AdminSite):
    site_header = "Chatter operations"
    site_title = "Chatter"
    index_title = "Operator console"

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        from console.dashboard import dashboard

        context = {"dashboard": dashboard(staff=request.user), **(extra_context or {})}  # type: ignore[arg-type]
        return super().index(request, context)

    def get_urls(self) -> list[URLPattern]:
        from console import views

        urls = [
            path(
                "console/operations/", self.admin_view(views.operations), name="console_operations"
            ),
            path("console/chat/", self.admin_view(views.chat), name="console_chat"),
            path(
                "console/chat/<uuid:conversation_id>/",
                self.admin_view(views.chat),
                name="console_chat_conversation",
            ),
        ]
        return urls + super().get_urls()  # type: ignore[return-value]


class ConsoleAdminConfig(AdminConfig):
    """``django.contrib.admin`` with ``admin.site`` being the console's site."""

    default_site = "console.sites.ConsoleAdminSite"
