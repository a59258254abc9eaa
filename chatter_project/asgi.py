from __future__ import annotations

import os
import warnings

from django.core.asgi import get_asgi_application

# whitenoise serves static files through sync file iterators; under ASGI Django reads them
# into memory (they are small) and warns on every request. Streaming replies use async
# iterators and are not affected.
warnings.filterwarnings(
    "ignore",
    message="StreamingHttpResponse must consume synchronous iterators",
    module="django.core.handlers.asgi",
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")

application = get_asgi_application()
