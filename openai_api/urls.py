from __future__ import annotations

from django.urls import path

from openai_api.api import openai_ninja

urlpatterns = [path("", openai_ninja.urls)]
