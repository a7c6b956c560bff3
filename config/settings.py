"""Settings, all read from the environment (django-environ) with safe defaults.

With no environment at all this runs the embedded default: SQLite, the database cache (shared by
every local process), Celery tasks run eagerly, and the development issuer allowed only when DEBUG
is on. With DEBUG off (the default) it is production: SECRET_KEY is required, cookies are secure,
and behind a TLS proxy (BEHIND_TLS_PROXY) plain HTTP is redirected and HSTS sent. `.env.example`
lists every variable.
"""

from datetime import timedelta
from pathlib import Path

import environ
from corsheaders.defaults import default_headers as default_cors_headers
from django.core.exceptions import ImproperlyConfigured

from ops.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env (platform/demo leaves one); real environment variables win over it. ENV_FILE names
# another file, or none when empty; containers get their environment from compose instead.
ENV_FILE = env.str("ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    environ.Env.read_env(ENV_FILE, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set and DEBUG is off. Set SECRET_KEY to a long random value, e.g. "
        "the output of: python -c 'import secrets; print(secrets.token_urlsafe(50))' "
        "(or set DEBUG=true, for local development only)."
    )
if not SECRET_KEY:
    SECRET_KEY = "insecure-development-only-key"  # noqa: S105 - never used with DEBUG off
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", ".localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)

INSTALLED_APPS = [
    # First, so that its createsuperuser (which validates DJANGO_SUPERUSER_PASSWORD) wins over
    # django.contrib.auth's: an earlier app's management command takes precedence.
    "ops",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tenants",
    "authz",
    "messages.apps.MessagesConfig",
    # Development only (the demo, the tests, the compose dev profile); nothing else imports it.
    "devissuer",
    "axes",
]

MIDDLEWARE = [
    # Probes first: no host check, HTTPS redirect or session for /healthz and /readyz.
    "ops.middleware.HealthProbeMiddleware",
    "ops.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # django-cors-headers', sparing requests without Origin its parse of every header.
    "tenants.cors.TenantCorsMiddleware",
    # Django's, skipped on the API and decision paths, which a token authenticates (issue 21):
    # no session, login or message is read or written there.
    "ops.middleware.WebSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # As named, for Django's check --deploy (security.W003); API views are exempt anyway.
    "django.middleware.csrf.CsrfViewMiddleware",
    "ops.middleware.WebAuthenticationMiddleware",
    "ops.middleware.WebMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout flagged during the login into its page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
# A persistent connection is checked before reuse, so a database restart costs no failed request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes share the file (web workers, manage.py commands, the database cache).
    # WAL: readers never wait for a writer. IMMEDIATE: a transaction takes the write lock when it
    # begins, so a concurrent writer waits up to the timeout for it instead of failing at once
    # with "database is locked" (a deferred transaction upgrading its lock cannot wait).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's Redis backend, keeping one client per connection pool (authz/store.py).
            "BACKEND": "authz.store.SharedRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "authz",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    # The shared store must be shared by every process on the machine (gunicorn workers, manage.py
    # commands), so not the per-process local-memory cache. The database cache, not a file cache:
    # its add() can be made atomic (one upsert, also over an expired row) and its incr() can hold
    # the row, which locks, cooldowns and login failure counts need, where a file cache's add()
    # is check-then-write. ops creates the table on migrate.
    CACHES = {
        "default": {
            # Django's database cache with that add() and incr() (authz/store.py).
            "BACKEND": "authz.store.SharedDatabaseCache",
            "LOCATION": "authz_cache",
            # Django's default of 300 entries would cull key-set records and stamps of live tenants
            # (and DPoP proof ids, so replays). Expired rows are deleted every minute instead
            # (tenants/sync.py), far below this.
            "OPTIONS": {"MAX_ENTRIES": 1_000_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# Where collectstatic gathers files (the image sets it and collects at build time), served by
# whitenoise with hashed names; unset, whitenoise serves the apps' files as they are.
STATIC_ROOT = env.str("STATIC_ROOT", default="") or None
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=STATIC_ROOT is None)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_ROOT
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Production transport security. Cookies are secure unless DEBUG. Behind a TLS-terminating proxy
# that sets X-Forwarded-Proto (and strips it from clients), plain HTTP is redirected and HSTS sent.
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=BEHIND_TLS_PROXY)
# The proxy asks for decisions over its own hop (often plain HTTP on a private network).
SECURE_REDIRECT_EXEMPT = [r"^authz/decision(/|$)"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 86400 if BEHIND_TLS_PROXY else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=not DEBUG)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Admin logins (the API never calls authenticate(): it verifies tokens). django-axes counts failed
# logins per username and client address together, in the shared store (the default cache), so a
# lockout holds in every worker and replica; one address guessing cannot lock a user out of
# another, and one user's failures never lock out a whole office behind one address.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair before any check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_CACHE = "default"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
axes_cooloff_seconds = env.int("AXES_COOLOFF_SECONDS", default=15 * 60)
if AXES_FAILURE_LIMIT < 1 or axes_cooloff_seconds < 1:
    raise ImproperlyConfigured(
        "AXES_FAILURE_LIMIT and AXES_COOLOFF_SECONDS must be positive whole numbers "
        "(defaults: 5 failures, 900 seconds); set AXES_ENABLED=false to turn lockouts off."
    )
AXES_COOLOFF_TIME = timedelta(seconds=axes_cooloff_seconds)
AXES_RESET_ON_SUCCESS = True  # a good login forgets the pair's earlier typos
AXES_CLIENT_IP_CALLABLE = "ops.login.client_address"
AXES_LOCKOUT_TEMPLATE = "admin/login_locked_out.html"
# Logs name the address but not the username (people type their password there by mistake).
AXES_SENSITIVE_PARAMETERS = ["username"]
# Its models and admin pages belong to its database handler; with the cache they stay empty.
AXES_ENABLE_ADMIN = False
# Proxies in front whose X-Forwarded-For entries are trusted (each appends the address it saw):
# the client address is the entry the outermost one added. 0: the peer address (REMOTE_ADDR).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=1 if BEHIND_TLS_PROXY else 0)

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's, with "*/*" and a bare "application/json" answered without parsing (issue 21).
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "tenants.negotiation.PlainAcceptNegotiation",
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["authz.authentication.TenantTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["authz.permissions.HasEndpointScopes"],
    "EXCEPTION_HANDLER": "authz.handlers.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "authz.schema.ScopedAutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tenant authz API",
    "DESCRIPTION": (
        "The API of every tenant. Call it on the tenant's hostname (`/api/...`) or under "
        "`/t/<tenant slug>/api/...`, with `Authorization: Bearer <access token>` from the "
        "tenant's issuer. Each operation lists the scopes it requires by default; a tenant may "
        "require others (its scope rules)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["authz.schema.host_paths_only"],
    # Swagger UI's "Try it out" and generated clients pick a tenant here: by slug (any number of
    # tenants, so none is listed), or the tenant of the hostname the docs were opened on.
    "SERVERS": [
        {
            "url": "/t/{tenant}",
            "description": "A tenant by its slug, on any hostname",
            "variables": {
                "tenant": {"default": "demo", "description": "The tenant's slug"},
            },
        },
        {"url": "/", "description": "The tenant of this hostname"},
    ],
}

# Browser consumers: each tenant lists its origins (tenants/cors.py); none are allowed globally.
CORS_URLS_REGEX = r"^(/t/[^/]+)?/api/"
CORS_ALLOWED_ORIGINS: list[str] = []
# DPoP (RFC 9449): browsers may send the proof, and scripts may read the nonce and challenges.
CORS_ALLOW_HEADERS = (*default_cors_headers, "dpop")
CORS_EXPOSE_HEADERS = ["DPoP-Nonce", "WWW-Authenticate"]

# Celery: with no Redis the embedded default runs tasks eagerly in the calling process.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://localhost/")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", default=0) or None  # None: one per CPU
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # the worker logs through LOGGING, as JSON lines
# Beat answers `celery inspect ping -d celerybeat@<host>` while it ticks: its health check.
CELERY_BEAT_ENABLE_REMOTE_CONTROL = True
CELERY_BEAT_SCHEDULE_FILENAME = env.str("BEAT_SCHEDULE_FILE", default="celerybeat-schedule")
jwks_refresh_interval = env.float("AUTHZ_JWKS_REFRESH_INTERVAL", default=300)
CELERY_BEAT_SCHEDULE = {
    "refresh-all-key-sets": {
        "task": "tenants.tasks.refresh_all_key_sets",
        "schedule": timedelta(seconds=jwks_refresh_interval),
    }
}

AUTHZ = {
    "ALLOW_INSECURE_ISSUERS": env.bool("AUTHZ_ALLOW_INSECURE_ISSUERS", default=False),
    "INSECURE_ISSUERS_ACKNOWLEDGED": env.bool("AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED", default=False),
    "DEFAULT_TENANT": env.str("DEFAULT_TENANT", default="") or None,
    "UNKNOWN_KID_COOLDOWN": env.float("AUTHZ_UNKNOWN_KID_COOLDOWN", default=30),
    "KEYSET_MAX_STALE": env.float("AUTHZ_KEYSET_MAX_STALE", default=24 * 3600),
    "CONFIG_RECHECK_INTERVAL": env.float("AUTHZ_CONFIG_RECHECK_INTERVAL", default=2),
    "JWKS_REFRESH_INTERVAL": jwks_refresh_interval,
    "BACKGROUND_SYNC": env.bool("AUTHZ_BACKGROUND_SYNC", default=True),
    "JWKS_FETCH_DEADLINE": env.float("AUTHZ_JWKS_FETCH_DEADLINE", default=5),
    "JWKS_BACKGROUND_FETCH_DEADLINE": env.float("AUTHZ_JWKS_BACKGROUND_FETCH_DEADLINE", default=15),
    "DIRECTORY_SIZE": env.int("AUTHZ_DIRECTORY_SIZE", default=20_000),
    "CHECK_ISSUER_COOLDOWN": env.float("AUTHZ_CHECK_ISSUER_COOLDOWN", default=10),
    "MAX_TOKEN_BYTES": env.int("AUTHZ_MAX_TOKEN_BYTES", default=8 * 1024),
    "VERIFIED_TOKEN_CACHE_SIZE": env.int("AUTHZ_VERIFIED_TOKEN_CACHE_SIZE", default=4096),
    "VERIFIED_TOKEN_CACHE_BYTES": env.int("AUTHZ_VERIFIED_TOKEN_CACHE_BYTES", default=8 << 20),
    "REFUSED_TOKEN_CACHE_SIZE": env.int("AUTHZ_REFUSED_TOKEN_CACHE_SIZE", default=4096),
    "REFUSED_TOKEN_CACHE_BYTES": env.int("AUTHZ_REFUSED_TOKEN_CACHE_BYTES", default=2 << 20),
    "DPOP_PROOF_MAX_AGE": env.float("AUTHZ_DPOP_PROOF_MAX_AGE", default=60),
    "DPOP_PROOF_MAX_FUTURE": env.float("AUTHZ_DPOP_PROOF_MAX_FUTURE", default=5),
    "DPOP_NONCE_PERIOD": env.float("AUTHZ_DPOP_NONCE_PERIOD", default=300),
    "METRICS_TENANT_LABELS": env.int("AUTHZ_METRICS_TENANT_LABELS", default=100),
    "METRICS_KEY_SET_LABELS": env.int("AUTHZ_METRICS_KEY_SET_LABELS", default=100),
    "METRICS_ROUTE_LABELS": env.int("AUTHZ_METRICS_ROUTE_LABELS", default=100),
    "TRAFFIC_FLUSH_INTERVAL": env.float("AUTHZ_TRAFFIC_FLUSH_INTERVAL", default=10),
    "RATE_LIMIT_PER_SUBJECT": env.str("AUTHZ_RATE_LIMIT_PER_SUBJECT", default=""),
    "RATE_LIMIT_PER_TENANT": env.str("AUTHZ_RATE_LIMIT_PER_TENANT", default=""),
    "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": env.str(
        "AUTHZ_RATE_LIMIT_ANONYMOUS_PER_ADDRESS", default=""
    ),
    "RATE_LIMIT_IPV6_PREFIX": env.int("AUTHZ_RATE_LIMIT_IPV6_PREFIX", default=64),
}

# /authz/decision (forward auth for nginx, Caddy, Traefik, Envoy) answers only requests with
# "X-Authz-Proxy-Secret: <AUTHZ_PROXY_SECRET>"; unset, the endpoint does not exist.
AUTHZ_PROXY_SECRET = env.str("AUTHZ_PROXY_SECRET", default="")

# GET /metrics answers only "Authorization: Bearer <METRICS_TOKEN>"; unset, metrics are off.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

DEVISSUER_KEY_DIR = Path(env.str("DEVISSUER_KEY_DIR", default=str(BASE_DIR / "var" / "devissuer")))

# One JSON object per line on stderr (LOG_FORMAT=text for plain lines).
LOGGING = logging_config(
    env.str("LOG_LEVEL", default="INFO"), json_lines=env.str("LOG_FORMAT", default="json") == "json"
)
