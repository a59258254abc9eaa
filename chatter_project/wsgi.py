from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from core.embedded_db import embedded_database_ensure

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")

application = get_wsgi_application()
embedded_database_ensure()
