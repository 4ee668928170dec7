"""Parley settings, read from the environment in this one place.

Two modes, chosen by ``REDIS_URL``:

* embedded (``REDIS_URL`` unset): SQLite, the in-memory channel layer and event
  log, and an agent worker inside the web process. ``make run`` uses it.
* production (``REDIS_URL`` set): Redis carries the channel layer, the event log
  and the shared cache; ``DATABASE_URL`` points at PostgreSQL; any number of
  ``daphne`` and ``runworker agent-runs`` processes share them.
"""

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


REDIS_URL = env_str("REDIS_URL")
PARLEY_EMBEDDED = not REDIS_URL
if REDIS_URL:
    from redis.connection import parse_url as _parse_redis_url

    try:  # redis://, rediss:// (TLS) and unix:// work; anything else stops here
        _parse_redis_url(REDIS_URL)
    except ValueError as error:
        raise ImproperlyConfigured(
            f"REDIS_URL cannot be used: {error}. Redis Sentinel URLs are not "
            "supported; point REDIS_URL at the primary (docs/deploy.md)."
        ) from None

DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not PARLEY_EMBEDDED and not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set in production mode.")
    SECRET_KEY = "parley-embedded-insecure-key-set-SECRET_KEY-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    # agents comes before channels so that its runworker (which adds leases,
    # sweeping and graceful shutdown for agent-runs) overrides the stock one.
    "realtime",
    "agents",
    "chat",
    "ops",
    "audit",
    "usage",
    "compat",
    "webhooks",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc files, served as static
    "corsheaders",
]

MIDDLEWARE = [
    "ops.middleware.ProbeMiddleware",
    # Before CommonMiddleware; answers /api/ only (CORS_URLS_REGEX).
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit.context.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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

DATA_DIR = Path(env_str("PARLEY_DATA_DIR", str(BASE_DIR / "var")))
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'parley.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A transaction left open by a bug (see realtime/events.py, call_service) holds
    # its row locks; PostgreSQL ends such a session after this many seconds so
    # one bug can never freeze a thread's rows for good. 0 turns it off.
    _idle_ms = int(env_float("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", 60) * 1000)
    if _idle_ms > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
            f"-c idle_in_transaction_session_timeout={_idle_ms}"
        )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads write (web requests, the in-process worker): wait for the
    # lock instead of failing, and let readers run beside the writer.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    # One test database per test run, so that runs side by side do not collide.
    DATABASES["default"]["TEST"] = {
        "NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"

CSRF_FAILURE_VIEW = "restapi.errors.csrf_failure"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- Channel layer, cache ---------------------------------------------------
# redis-py 8 gives sockets a 5 s read timeout by default, shorter than the
# layer's blocking receive; an idle socket would then fail with "Timeout
# reading". 30 s is comfortably above channels-redis's 5 s BZPOPMIN.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 30.0)
# The event log (every chunk: one script call, one delivery per web process)
# may spread threads over several Redis servers, comma-separated; the channel
# layer and the cache stay on REDIS_URL. Default: REDIS_URL alone.
REDIS_EVENT_LOG_URLS = [
    url.strip()
    for url in (env_str("REDIS_EVENT_LOG_URLS") or REDIS_URL or "").split(",")
    if url.strip()
]
for _url in REDIS_EVENT_LOG_URLS if REDIS_URL else ():
    from redis.connection import parse_url as _parse_redis_url

    try:
        _parse_redis_url(_url)
    except ValueError as error:
        raise ImproperlyConfigured(
            f"REDIS_EVENT_LOG_URLS holds a URL that cannot be used: {error}"
        ) from None

if PARLEY_EMBEDDED:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.InMemoryThreadLayer",
            "CONFIG": {"capacity": 10_000, "expiry": 60},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.RedisThreadLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": REDIS_SOCKET_TIMEOUT,
                        "retry_on_timeout": True,
                        # redis-py fails (not waits) past its pool's size, 100
                        # by default; a burst of new messages sends that many.
                        "max_connections": env_int("REDIS_LAYER_MAX_CONNECTIONS", 1000),
                        # TCP keepalive; redis-py refuses the option on unix://.
                        **(
                            {}
                            if REDIS_URL.startswith("unix:")
                            else {"socket_keepalive": True}
                        ),
                    }
                ],
                "capacity": 10_000,
                "expiry": 60,
                "prefix": "parley:layer",
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "parley",
        }
    }

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: a request without credentials is then 401, not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "restapi.errors.ErrorDocumentingSchema",
    "EXCEPTION_HANDLER": "restapi.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    # The API's views use chat.api.UserThrottle / AnonThrottle (same rates).
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("API_USER_RATE", "6000/min"),
        "anon": env_str("API_ANON_RATE", "600/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Parley API",
    "DESCRIPTION": "Manage agents, threads, members and runs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ and /api/redoc/ load their JS and CSS from this project's
    # static files (drf-spectacular-sidecar), never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No online-validator badge, which Swagger UI would fetch from another host.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    # Two choice sets share the field name "role": name them.
    "ENUM_NAME_OVERRIDES": {
        "CallerRoleEnum": "chat.serializers.CALLER_ROLE_CHOICES",
        "MemberRoleEnum": "chat.serializers.MEMBER_ROLE_CHOICES",
        "RunStatusEnum": "agents.models.RunStatus",
        "InputStatusEnum": "agents.models.RunInputStatus",
    },
}

# --- Security (production) --------------------------------------------------
if not DEBUG and not PARLEY_EMBEDDED:
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# --- Parley -----------------------------------------------------------------
# Serve /static/ from the ASGI app itself (plain `daphne` in embedded mode).
PARLEY_SERVE_STATIC = env_bool("PARLEY_SERVE_STATIC", True)
# Run the agent worker inside the web process (embedded mode only).
PARLEY_EMBEDDED_WORKER = env_bool("PARLEY_EMBEDDED_WORKER", PARLEY_EMBEDDED)
PARLEY_MAX_FRAME_BYTES = env_int("PARLEY_MAX_FRAME_BYTES", 64 * 1024)
PARLEY_MAX_MESSAGE_CHARS = env_int("PARLEY_MAX_MESSAGE_CHARS", 16_000)
# daphne sends no WebSocket message above 1 MiB; replies and snapshots stay below.
PARLEY_MAX_REPLY_CHARS = env_int("PARLEY_MAX_REPLY_CHARS", 100_000)
PARLEY_SNAPSHOT_MAX_CHARS = env_int("PARLEY_SNAPSHOT_MAX_CHARS", 300_000)
PARLEY_MESSAGES_PER_MINUTE = env_int("PARLEY_MESSAGES_PER_MINUTE", 30)
PARLEY_MAX_CLIENTS_PER_THREAD = env_int("PARLEY_MAX_CLIENTS_PER_THREAD", 50)
PARLEY_MAX_ACTIVE_RUNS_PER_USER = env_int("PARLEY_MAX_ACTIVE_RUNS_PER_USER", 5)
# Runs queued or running in the whole deployment at most (0: no cap); past it a
# new message is refused with `server_busy` and a hint when to try again.
PARLEY_MAX_ACTIVE_RUNS = env_int("PARLEY_MAX_ACTIVE_RUNS", 0)
PARLEY_WORKER_CONCURRENCY = env_int("PARLEY_WORKER_CONCURRENCY", 1000)
# Coalescing: a token waits at most PARLEY_FLUSH_WINDOW_MS for others to share
# its chunk; past PARLEY_FLUSH_WINDOW_RUNS runs in flight on a worker the window
# grows in proportion, up to PARLEY_FLUSH_WINDOW_MAX_MS (agents/runtime.py).
PARLEY_FLUSH_WINDOW_MS = env_int("PARLEY_FLUSH_WINDOW_MS", 25)
PARLEY_FLUSH_WINDOW_MAX_MS = env_int("PARLEY_FLUSH_WINDOW_MAX_MS", 80)
PARLEY_FLUSH_WINDOW_RUNS = env_int("PARLEY_FLUSH_WINDOW_RUNS", 50)
# Threads that run services called from async code (realtime/events.py): on
# PostgreSQL two, so one database round trip does not hold up every socket's
# message or every run's claim (more take the GIL from the event loop: at K=300
# in bench/, 4 threads started runs slower than 2); SQLite has one writer: one.
PARLEY_SERVICE_THREADS = env_int(
    "PARLEY_SERVICE_THREADS",
    1 if DATABASES["default"]["ENGINE"].endswith("sqlite3") else 2,
)
# Event frames go straight to the socket (realtime/transport.py) instead of through
# autobahn and Twisted's write buffering; 0 sends everything through daphne.
PARLEY_DIRECT_WEBSOCKET_WRITES = env_bool("PARLEY_DIRECT_WEBSOCKET_WRITES", True)
# A message with this many others of its process ahead of it, waiting to be
# stored (a burst), gets a `queued` status at once (docs/protocol.md); 0 = never.
PARLEY_QUEUED_NOTICE_AFTER = env_int("PARLEY_QUEUED_NOTICE_AFTER", 50)
# sys.setswitchinterval for every process (chat/apps.py); Python's default is 5.
PARLEY_GIL_SWITCH_INTERVAL_MS = env_float("PARLEY_GIL_SWITCH_INTERVAL_MS", 0.5)
# The openai provider reads streams as plain JSON (agents/providers/openai_stream.py);
# 0 = through the SDK's models (several times the worker CPU per token).
PARLEY_OPENAI_FAST_STREAM = env_bool("PARLEY_OPENAI_FAST_STREAM", True)
# The openai and anthropic SDKs stream over their aiohttp transport (the
# `aiohttp` extra, agents/providers/http.py); 0 = their default httpx2 transport,
# at more worker CPU per token.
PARLEY_PROVIDER_AIOHTTP = env_bool("PARLEY_PROVIDER_AIOHTTP", True)
# Garbage collection (config/process.py): what the process loaded at start-up is
# frozen out of collections, and young objects are collected every
# PARLEY_GC_THRESHOLD allocations (Python's default is 700). With the defaults a
# full collection walked every object the process held and paused daphne or the
# worker for 100-270 ms every few seconds under load (bench/, K = 500).
PARLEY_GC_FREEZE = env_bool("PARLEY_GC_FREEZE", True)
PARLEY_GC_THRESHOLD = env_int("PARLEY_GC_THRESHOLD", 10_000)
PARLEY_LEASE_SECONDS = env_int("PARLEY_LEASE_SECONDS", 15)
PARLEY_SWEEP_INTERVAL_SECONDS = env_float("PARLEY_SWEEP_INTERVAL_SECONDS", 5.0)
# Every this many seconds (at most 2) a worker writes the text so far of its
# running runs whose text changed to the database, and once more when it shuts
# down: the in-memory event log dies with the process, so after a crash the
# sweeper keeps that text (agents/checkpoints.py, agents/sweep.py). Production's
# Redis log holds the text: 0 (off) by default there.
PARLEY_CHECKPOINT_SECONDS = min(
    max(env_float("PARLEY_CHECKPOINT_SECONDS", 2.0 if PARLEY_EMBEDDED else 0.0), 0.0),
    2.0,
)
PARLEY_SHUTDOWN_GRACE_SECONDS = env_float("PARLEY_SHUTDOWN_GRACE_SECONDS", 20.0)
# How long a web process keeps what a connect read (token, thread, members,
# snapshot rows) at most; changes made through Django drop it at once
# (chat/connectcache.py). 0 turns the cache off.
PARLEY_CONNECT_CACHE_SECONDS = env_float("PARLEY_CONNECT_CACHE_SECONDS", 30.0)
PARLEY_EVENT_LOG_MAXLEN = env_int("PARLEY_EVENT_LOG_MAXLEN", 20_000)
PARLEY_EVENT_LOG_TTL_SECONDS = env_int("PARLEY_EVENT_LOG_TTL_SECONDS", 3600)
PARLEY_SEND_BUFFER_LIMIT_BYTES = env_int("PARLEY_SEND_BUFFER_LIMIT_BYTES", 1 << 20)
# A socket past that limit: `resync` (once drained, one snapshot) or `close`
# (close code 4408 after what it was sent; the client resumes from its last id).
PARLEY_SLOW_CLIENT = env_str("PARLEY_SLOW_CLIENT", "resync")
if PARLEY_SLOW_CLIENT not in ("resync", "close"):
    raise ImproperlyConfigured(
        f"PARLEY_SLOW_CLIENT must be resync or close, not {PARLEY_SLOW_CLIENT!r}."
    )
PARLEY_SSE_HEARTBEAT_SECONDS = env_float("PARLEY_SSE_HEARTBEAT_SECONDS", 15.0)
PARLEY_HISTORY_MAX_CHARS = env_int("PARLEY_HISTORY_MAX_CHARS", 24_000)
PARLEY_PROVIDER_TIMEOUT_SECONDS = env_float("PARLEY_PROVIDER_TIMEOUT_SECONDS", 60.0)
PARLEY_PROVIDER_MAX_RETRIES = env_int("PARLEY_PROVIDER_MAX_RETRIES", 2)
# MCP servers over stdio start processes on the worker: only when allowed.
PARLEY_MCP_ALLOW_STDIO = env_bool("PARLEY_MCP_ALLOW_STDIO", False)
# A tool still running after this long: the thread gets a `notice` (tool_slow).
PARLEY_SLOW_TOOL_NOTICE_SECONDS = env_float("PARLEY_SLOW_TOOL_NOTICE_SECONDS", 5.0)
# Agents written in Python beyond those registered with @python_agent in an
# installed app: dotted class paths, comma-separated (agents/python_agents/).
PARLEY_PYTHON_AGENTS = [
    path.strip() for path in env_str("PARLEY_PYTHON_AGENTS").split(",") if path.strip()
]
# /metrics wants `Authorization: Bearer <this>` (or a staff login); empty: staff only.
PARLEY_METRICS_TOKEN = env_str("PARLEY_METRICS_TOKEN")
PARLEY_READYZ_TIMEOUT_SECONDS = env_float("PARLEY_READYZ_TIMEOUT_SECONDS", 2.0)
# The monthly budget of every user without one of their own (usage/): tokens
# (input + output) and/or cost at the agents' prices; unset or 0 = unlimited.
# HARD: also stop a reply that crosses it, not only refuse the next one.
PARLEY_DEFAULT_MONTHLY_TOKEN_BUDGET = env_int("PARLEY_DEFAULT_MONTHLY_TOKEN_BUDGET", 0)
try:
    PARLEY_DEFAULT_MONTHLY_COST_BUDGET = Decimal(
        env_str("PARLEY_DEFAULT_MONTHLY_COST_BUDGET", "0").strip() or "0"
    )
except InvalidOperation:
    PARLEY_DEFAULT_MONTHLY_COST_BUDGET = Decimal("NaN")
if PARLEY_DEFAULT_MONTHLY_TOKEN_BUDGET < 0 or not (
    PARLEY_DEFAULT_MONTHLY_COST_BUDGET.is_finite()
    and PARLEY_DEFAULT_MONTHLY_COST_BUDGET >= 0
):
    raise ImproperlyConfigured(
        "PARLEY_DEFAULT_MONTHLY_TOKEN_BUDGET and PARLEY_DEFAULT_MONTHLY_COST_BUDGET "
        "must be numbers >= 0 (0 or unset: unlimited)."
    )
PARLEY_DEFAULT_BUDGET_HARD = env_bool("PARLEY_DEFAULT_BUDGET_HARD", False)

# --- Webhooks (webhooks/) -------------------------------------------------
# Hosts a webhook URL may name, comma-separated: `hooks.example.com` (exactly
# that host: http allowed, private addresses allowed), `*.example.com` (its
# subdomains) or `*` (any host); a wildcard match must be https and resolve to
# public addresses only. Empty: no webhook can be created.
PARLEY_WEBHOOK_ALLOWED_HOSTS = env_list("PARLEY_WEBHOOK_ALLOWED_HOSTS")
PARLEY_WEBHOOK_TIMEOUT_SECONDS = env_float("PARLEY_WEBHOOK_TIMEOUT_SECONDS", 10.0)
# Attempts per delivery; between them the wait grows from FIRST by 3x to MAX.
PARLEY_WEBHOOK_MAX_ATTEMPTS = env_int("PARLEY_WEBHOOK_MAX_ATTEMPTS", 8)
PARLEY_WEBHOOK_RETRY_FIRST_SECONDS = env_float(
    "PARLEY_WEBHOOK_RETRY_FIRST_SECONDS", 10.0
)
PARLEY_WEBHOOK_RETRY_MAX_SECONDS = env_float("PARLEY_WEBHOOK_RETRY_MAX_SECONDS", 3600.0)
# How often a process looks for deliveries due (retries, rows left by a worker
# that stopped) and for ended runs whose delivery is missing.
PARLEY_WEBHOOK_SWEEP_SECONDS = env_float("PARLEY_WEBHOOK_SWEEP_SECONDS", 15.0)
PARLEY_WEBHOOK_CONCURRENCY = env_int("PARLEY_WEBHOOK_CONCURRENCY", 20)

# --- CORS (django-cors-headers), /api/ only -----------------------------------
# Origins (scheme://host[:port]) whose pages may call the API with a token;
# empty: no CORS headers at all (the default).
PARLEY_CORS_ALLOWED_ORIGINS = env_list("PARLEY_CORS_ALLOWED_ORIGINS")
CORS_ALLOWED_ORIGINS = PARLEY_CORS_ALLOWED_ORIGINS
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "last-event-id",
    "x-parley-thread-id",
)
CORS_EXPOSE_HEADERS = ("retry-after", "x-parley-thread-id", "x-parley-run-id")

# --- Single sign-on: OpenID Connect (sso/, mozilla-django-oidc) -------------
# Off unless OIDC_ISSUER is set; password login stays. docs/deploy.md, "Single
# sign-on", has the settings and an example.
INSTALLED_APPS += ["sso"]  # always: its identities table exists in every mode
OIDC_ISSUER = env_str("OIDC_ISSUER").strip()
OIDC_ENABLED = bool(OIDC_ISSUER)
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", "single sign-on").strip()
# A value of the groups claim that makes a user staff (every login); unset:
# single sign-on never changes is_staff.
OIDC_STAFF_GROUP = env_str("OIDC_STAFF_GROUP").strip()
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups").strip() or "groups"
if OIDC_ENABLED:
    _oidc_missing = [
        name
        for name in (
            "OIDC_CLIENT_ID",
            "OIDC_CLIENT_SECRET",
            "OIDC_AUTHORIZATION_ENDPOINT",
            "OIDC_TOKEN_ENDPOINT",
            "OIDC_USERINFO_ENDPOINT",
            "OIDC_JWKS_ENDPOINT",
        )
        if not env_str(name).strip()
    ]
    if _oidc_missing:
        raise ImproperlyConfigured(
            f"OIDC_ISSUER is set, so these must be too: {', '.join(_oidc_missing)}."
        )
    # mozilla-django-oidc's own names.
    OIDC_RP_CLIENT_ID = env_str("OIDC_CLIENT_ID").strip()
    OIDC_RP_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET").strip()
    OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_AUTHORIZATION_ENDPOINT").strip()
    OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_TOKEN_ENDPOINT").strip()
    OIDC_OP_USER_ENDPOINT = env_str("OIDC_USERINFO_ENDPOINT").strip()
    OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_JWKS_ENDPOINT").strip()
    OIDC_RP_SIGN_ALGO = env_str("OIDC_SIGN_ALGO", "RS256")
    OIDC_RP_SCOPES = env_str("OIDC_SCOPES", "openid email profile")
    OIDC_USE_PKCE = True
    OIDC_TIMEOUT = env_float("OIDC_TIMEOUT_SECONDS", 10.0)
    # client_secret_basic when 1; else the id and secret go in the POST body.
    OIDC_TOKEN_USE_BASIC_AUTH = env_bool("OIDC_TOKEN_USE_BASIC_AUTH", False)
    OIDC_CALLBACK_CLASS = "sso.views.OidcCallbackView"
    LOGIN_REDIRECT_URL_FAILURE = LOGIN_URL
    AUTHENTICATION_BACKENDS = [
        "django.contrib.auth.backends.ModelBackend",
        "sso.backends.OidcBackend",
    ]

# --- Logs (ops/logs.py) -----------------------------------------------------
# LOG_FORMAT=json: one JSON line per record with the request, thread, run and
# user ids; the default stays the plain message. LOG_REQUESTS: one line per
# HTTP request (method, path, status, ms); on by default with json.
LOG_FORMAT = env_str("LOG_FORMAT", "text").strip().lower()
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}.")
LOG_REQUESTS = env_bool("LOG_REQUESTS", LOG_FORMAT == "json")
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").strip().upper() or "INFO"
_QUIET_LOG_LEVEL = "INFO" if LOG_LEVEL in ("DEBUG", "NOTSET") else LOG_LEVEL
# After ProbeMiddleware: probes (every few seconds) are not logged.
MIDDLEWARE.insert(1, "ops.middleware.LogContextMiddleware")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"log_context": {"()": "ops.logs.LogContextFilter"}},
    "formatters": {"json": {"()": "ops.logs.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            **(
                {"formatter": "json", "filters": ["log_context"]}
                if LOG_FORMAT == "json"
                else {}
            ),
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        # INFO lines: shown when LOG_LEVEL lets INFO through.
        **({} if LOG_REQUESTS else {"parley.requests": {"level": "WARNING"}}),
        # In json, even at LOG_LEVEL=DEBUG: these log request bodies (the
        # prompt) and SQL parameters (message text) at DEBUG.
        **(
            {
                name: {"level": _QUIET_LOG_LEVEL}
                for name in (
                    "openai",
                    "anthropic",
                    "httpx",
                    "httpx2",
                    "httpcore",
                    "httpcore2",
                    "mcp",
                    "django.db.backends",
                )
            }
            if LOG_FORMAT == "json"
            else {}
        ),
    },
}
