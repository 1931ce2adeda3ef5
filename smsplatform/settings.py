"""Settings, read from the environment only (no secrets in the repository).

Embedded defaults run the whole platform on one machine with nothing installed:
SQLite, a file-based Celery transport, the simulator gateway. Production sets
DATABASE_URL, CELERY_BROKER_URL, DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from smsplatform.operations.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("SMS_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
# The embedded default key is public (it is in this file): it signs version tokens and recipient
# link tokens, so outside debug nothing starts with it (smsplatform.checks says so under
# `check --deploy` too). `make run` runs in debug; production sets DJANGO_SECRET_KEY.
DEFAULT_SECRET_KEY = "insecure-local-only-key-set-DJANGO_SECRET_KEY-in-production"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "").strip() or DEFAULT_SECRET_KEY
if SECRET_KEY == DEFAULT_SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set and DJANGO_DEBUG is off: refusing to start with the public default key. "
        "Set DJANGO_SECRET_KEY to a long random secret (or DJANGO_DEBUG=1 for a local run)."
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_htmx",
    "smsplatform",
    "compliance",
    "contacts",
    "gateways",
    "templates",
    "campaigns",
    "campaigns.otp",
    "campaigns.automations",
    "reporting",
]

MIDDLEWARE = [
    "smsplatform.operations.logs.RequestIdMiddleware",
    "smsplatform.operations.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's and the staff app's own) served by the app itself in production.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "smsplatform.security.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

# --- HTTPS deployments (`check --deploy`) ---------------------------------
# DJANGO_HTTPS=1 where the platform is served over HTTPS (behind a proxy that sets
# X-Forwarded-Proto: DJANGO_SECURE_PROXY_SSL_HEADER=1). Off by default: the embedded run is
# plain HTTP on localhost, and HSTS sent over plain HTTP would be ignored anyway.
HTTPS = env_bool("DJANGO_HTTPS", False)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", HTTPS)
# Gateways and the health check may call plain HTTP on an internal address.
SECURE_REDIRECT_EXEMPT = env_list("DJANGO_SECURE_REDIRECT_EXEMPT", r"^api/v1/health/?$")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", HTTPS)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "31536000" if HTTPS else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# The Content-Security-Policy header (smsplatform.security): every page, HTTPS or not. Our pages
# load scripts and styles from this origin only; the API docs page may also load Swagger UI
# from its CDN. Empty turns the header off (check --deploy then warns).
SMS_CONTENT_SECURITY_POLICY = os.environ.get(
    "SMS_CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
).strip()
SMS_CONTENT_SECURITY_POLICY_API_DOCS = os.environ.get(
    "SMS_CONTENT_SECURITY_POLICY_API_DOCS",
    "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://cdn.jsdelivr.net; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'",
).strip()

ROOT_URLCONF = "smsplatform.urls"
WSGI_APPLICATION = "smsplatform.wsgi.application"
ASGI_APPLICATION = "smsplatform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "smsplatform.staff.context.staff_nav",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'smsplatform.sqlite3'}"),
        # Persistent connections: opening a PostgreSQL connection per request costs more
        # than most of our requests do.
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web process, the worker and beat share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
# Durable top-level services own their transactions (STYLE 4): never wrap requests.
DATABASES["default"]["ATOMIC_REQUESTS"] = False

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hant", "繁體中文")]
TIME_ZONE = os.environ.get("SMS_TIME_ZONE", "Asia/Hong_Kong")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise serves it (after collectstatic); it warns when it is missing
LOCALE_PATHS = [BASE_DIR / "smsplatform" / "locale"]

# Structured JSON lines in production, readable lines on the embedded default (LOG_FORMAT overrides);
# every line carries the request id (and actor, channel, task) and has its phone numbers masked.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain" if DEBUG else "json")
LOGGING = logging_config(fmt=LOG_FORMAT, level=os.environ.get("LOG_LEVEL", "INFO"))

# --- REST API -------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "smsplatform.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON bounded in depth (smsplatform.api.parsers); forms and uploads for the CSV import.
    "DEFAULT_PARSER_CLASSES": [
        "smsplatform.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "smsplatform.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SMS Marketing Platform API",
    "DESCRIPTION": (
        "REST interface of the SMS marketing platform. Every write takes an idempotency_key; "
        "updates take the base_version_token read before. Errors share one shape: "
        "{error: {code, message, field, hint}}."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from our own static files (drf-spectacular-sidecar): /api/docs/ works
    # without internet, and never loads a moving "@latest" from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Fields of the same name with different choices get names that say which they are.
    "ENUM_NAME_OVERRIDES": {
        "TemplateLanguageEnum": "templates.models.Language",
        "ContactLanguageEnum": "contacts.services.LANGUAGES",
        "TemplatePurposeEnum": "templates.models.Purpose",
        "ConsentPurposeEnum": "contacts.models.ConsentPurpose",
    },
    # Every real response documented (smsplatform.api.schema); enums list only real values.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "smsplatform.api.schema.every_response_documented",
    ],
    "ENUM_ADD_EXPLICIT_BLANK_NULL_CHOICE": False,
}

# --- MCP ------------------------------------------------------------------
DJANGO_MCP_GET_SERVER_INSTRUCTIONS_TOOL = False
DJANGO_MCP_GLOBAL_SERVER_CONFIG = {"name": "sms_marketing", "stateless": True}
# Browser origins allowed to call /mcp (comma-separated, e.g. "https://inspector.example.com").
# Requests without an Origin header (agents, SDK clients) always pass; any other Origin gets 403,
# the MCP transport's defence against DNS rebinding.
MCP_ALLOWED_ORIGINS = env_list("MCP_ALLOWED_ORIGINS", "")

# --- Celery ---------------------------------------------------------------
# The embedded default is kombu's filesystem transport: no broker server needed.
_celery_queue_dir = VAR_DIR / "celery"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_celery_queue_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_queue_dir / "queue"),
        "data_folder_out": str(_celery_queue_dir / "queue"),
        "processed_folder": str(_celery_queue_dir / "processed"),
        # Broadcast (remote-control) exchanges: under var/, never in the working directory.
        "control_folder": str(_celery_queue_dir / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A task whose worker was killed (acks late) is delivered again after this long, not the
    # transport's default hour. Longer than any task runs (a 1M-recipient dispatch: ~30 s).
    # Queues are read in the order the worker lists them (CELERY_TASK_QUEUES: the priority lane
    # first), not round-robin: an OTP's submit task never waits behind a backlog of others.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600, "queue_order_strategy": "priority"}
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Our LOGGING (JSON lines, request ids, masked phones) applies in workers too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The priority lane (gateways.models.PRIORITY_PURPOSES: OTP, transactional, test): their submit
# tasks go to a queue of their own (gateways.delivery.queue.message_submit_enqueue). A worker
# started without -Q consumes every queue named here, this one first on Redis (see
# queue_order_strategy above; the embedded filesystem transport alternates between them, so a
# priority task waits for at most the task running and one other). A deployment may also run a
# worker of its own on it: celery -A smsplatform worker -Q sms_priority.
SMS_PRIORITY_QUEUE = "sms_priority"
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = (
    Queue(SMS_PRIORITY_QUEUE, routing_key=SMS_PRIORITY_QUEUE),
    Queue(CELERY_TASK_DEFAULT_QUEUE, routing_key=CELERY_TASK_DEFAULT_QUEUE),
)

# --- Platform -------------------------------------------------------------
# Retention (PDPO): days each kind of personal data is kept, then purged by beat in small batches
# (smsplatform.operations.retention); 0 keeps it for ever. Aggregates and the audit log are kept.
# Commerce events have their own period and purge (SMS_EVENTS_RETENTION_DAYS, automations.purge_events).
SMS_RETENTION_DAYS = {
    kind: int(os.environ.get(f"SMS_RETENTION_{kind.upper()}_DAYS", default))
    for kind, default in (
        ("message_bodies", 180),
        ("inbound_messages", 365),
        ("link_clicks", 400),
    )
}
# /metrics answers these addresses (the monitoring network) without a login; others need a login
# with the audit-log view permission (operators).
SMS_METRICS_ALLOWED_IPS = [
    ip.strip() for ip in os.environ.get("SMS_METRICS_ALLOWED_IPS", "127.0.0.1,::1").split(",") if ip.strip()
]
SMS_RETENTION_BATCH_SIZE = int(os.environ.get("SMS_RETENTION_BATCH_SIZE", "5000"))
SMS_RETENTION_TIME_BUDGET_SECONDS = float(os.environ.get("SMS_RETENTION_TIME_BUDGET_SECONDS", "50"))
# /readyz fails when beat's heartbeat (sent every 10 s, run by a worker) is older than this.
SMS_BEAT_HEARTBEAT_MAX_AGE_SECONDS = int(os.environ.get("SMS_BEAT_HEARTBEAT_MAX_AGE_SECONDS", "60"))
# /readyz warns when a receipt is outstanding this long after submission, and fails past twice it.
SMS_RECEIPT_LAG_LIMIT_SECONDS = int(os.environ.get("SMS_RECEIPT_LAG_LIMIT_SECONDS", "900"))
# How long stored previews stay usable, and the default life of an action request.
SMS_PREVIEW_TTL_SECONDS = int(os.environ.get("SMS_PREVIEW_TTL_SECONDS", "3600"))
# A campaign due this many seconds ago with nothing dispatched is dispatched again (campaigns.dispatch).
SMS_DISPATCH_GRACE_SECONDS = int(os.environ.get("SMS_DISPATCH_GRACE_SECONDS", "60"))
SMS_ACTION_REQUEST_TTL_HOURS = int(os.environ.get("SMS_ACTION_REQUEST_TTL_HOURS", "72"))
# Short-link clicks (templates.short_links.clicks): N > 0 appends each click to a local spool file before
# the redirect answers, and each web process writes its spool to the database every N seconds,
# one transaction per segment (a crashed process loses nothing; a crashed machine at most the
# last N seconds); 0 writes each click with one INSERT during the redirect (slower).
SMS_CLICK_BATCH_SECONDS = float(os.environ.get("SMS_CLICK_BATCH_SECONDS", "0.5"))
# Where the spool files live: a local disk of the web host, shared by its processes.
SMS_CLICK_SPOOL_DIR = os.environ.get("SMS_CLICK_SPOOL_DIR", str(VAR_DIR / "clicks"))
# The SMPP bind workers' journals of what they claimed and wrote (gateways.smpp.journal): on the
# local disk of the host the workers run on.
SMS_SMPP_JOURNAL_DIR = os.environ.get("SMS_SMPP_JOURNAL_DIR", str(VAR_DIR / "smpp-journal"))
# How long a web process may serve a short link from its cache before reading it again (a
# change made in the same process is seen at once).
SMS_SHORT_LINK_CACHE_SECONDS = float(os.environ.get("SMS_SHORT_LINK_CACHE_SECONDS", "10"))
# OTP abuse defence: a JSON object overriding the defaults of campaigns.otp.abuse.AbuseSettings
# (velocity limits, pumping thresholds, deny lists; docs/OTP.md "Abuse defence").
SMS_OTP_ABUSE = json.loads(os.environ.get("SMS_OTP_ABUSE", "").strip() or "{}")
# OTP codes are stored only as HMAC-SHA256 under this key. Set SMS_OTP_HASH_KEY to a secret of its
# own; by default it is derived from SECRET_KEY under a label of its own, so it is never SECRET_KEY
# itself (a rotation of SECRET_KEY invalidates pending codes, at most validity minutes of them).
SMS_OTP_HASH_KEY = (
    os.environ.get("SMS_OTP_HASH_KEY", "").strip()
    or hashlib.sha256(f"sms-otp-code-hash:{SECRET_KEY}".encode()).hexdigest()
)
# Whether a new OTP template must fit one SMS unless it says otherwise.
SMS_OTP_SINGLE_SEGMENT_DEFAULT = env_bool("SMS_OTP_SINGLE_SEGMENT_DEFAULT", True)

# --- Automations: the commerce events intake (campaigns.automations.intake) --------------------
# Events are kept this many days after they occurred (the beat task automations.purge_events
# deletes older ones, SMS_EVENTS_PURGE_BATCH ids per statement); an event older than that is
# refused at intake. Reporting's aggregates are not events and are kept.
SMS_EVENTS_RETENTION_DAYS = int(os.environ.get("SMS_EVENTS_RETENTION_DAYS", "400"))
SMS_EVENTS_PURGE_BATCH = int(os.environ.get("SMS_EVENTS_PURGE_BATCH", "5000"))
# A batch's signature timestamp may differ from the server's clock by this much (replay window).
SMS_EVENTS_SIGNATURE_TOLERANCE_SECONDS = int(os.environ.get("SMS_EVENTS_SIGNATURE_TOLERANCE_SECONDS", "300"))
# An event may say it occurred this far in the future (the business's clock runs ahead).
SMS_EVENTS_FUTURE_SKEW_SECONDS = int(os.environ.get("SMS_EVENTS_FUTURE_SKEW_SECONDS", "300"))
# The largest body the batch endpoint reads (1,000 events with their payloads).
SMS_EVENTS_MAX_BODY_BYTES = int(os.environ.get("SMS_EVENTS_MAX_BODY_BYTES", str(8 * 1024 * 1024)))
