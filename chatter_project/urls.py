from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from console.views import metrics

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    # Prometheus' default path, no trailing slash (console.views.scrape_refusal guards it).
    path("metrics", metrics, name="metrics"),
    path("api/v1/", include("chatter_project.api")),
    # Outside Chatter's versions and its schema: OpenAI's contract (see openai_api).
    path("api/openai/v1/", include("openai_api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its init script from a URL: no inline script, so a strict CSP holds.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
]
