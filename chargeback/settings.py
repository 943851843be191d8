"""Settings for chargeback, driven by environment variables (see .env.example)."""

import re
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("CHARGEBACK_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    # Never fall back to a known key silently: the demo and test scripts generate one.
    raise ImproperlyConfigured("SECRET_KEY is required (bin/demo and bin/test set one for you).")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

# Served over TLS (directly or behind a TLS-terminating proxy): cookies only over HTTPS, and HSTS.
# Off by default so that the demo on http://127.0.0.1 can sign in.
SECURE_TLS = env.bool("SECURE_TLS", default=False)
SESSION_COOKIE_SECURE = SECURE_TLS
CSRF_COOKIE_SECURE = SECURE_TLS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if SECURE_TLS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Redirect plain HTTP to HTTPS (health checks and scrapes on plain HTTP are exempt).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# Behind a TLS-terminating proxy, the header it sets and its value for HTTPS, e.g.
# "HTTP_X_FORWARDED_PROTO,https". Only set it when the proxy always sets (or strips) that header:
# otherwise a client could claim HTTPS.
_proxy_ssl_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2:
        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER is 'HEADER,value', e.g. HTTP_X_FORWARDED_PROTO,https."
        )
    SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header[0], _proxy_ssl_header[1])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tenants",
    "audit",
    "chargeback.apps.ChargebackConfig",
    "budgets.apps.BudgetsConfig",
    "insights.apps.InsightsConfig",
    "dashboards",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads a body: refuses oversized ones (413) from their Content-Length.
    "chargeback.middleware.RequestBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chargeback.urls"
WSGI_APPLICATION = "chargeback.wsgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'chargeback.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so "look up existing, then insert" cannot race
    # with another process; the timeout lets concurrent writers queue instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 30})
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# Request bodies: the ingestion endpoints read and bound their own bodies (16 MiB); everything
# else keeps Django's limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=2_621_440)
INGEST_MAX_BODY_BYTES = env.int("INGEST_MAX_BODY_BYTES", default=16 * 1024 * 1024)
INGEST_MAX_RECORDS = env.int("INGEST_MAX_RECORDS", default=10_000)
# Requests per API key (shared by every process through Redis; through the cache without Redis):
# "<count>/<second|minute|hour|day>", empty to switch a limit off. Over it: 429 `rate_limited`
# with Retry-After. Ingestion (usage, OTLP, LiteLLM) counts requests, not records.
INGEST_RATE_LIMIT = env.str("INGEST_RATE_LIMIT", default="3000/min")
ALLOWANCE_RATE_LIMIT = env.str("ALLOWANCE_RATE_LIMIT", default="60000/min")
for _rate_setting in ("INGEST_RATE_LIMIT", "ALLOWANCE_RATE_LIMIT"):
    if not re.fullmatch(r"(off|none|\d+/[smhd][a-z]*)?", vars()[_rate_setting].strip().lower()):
        raise ImproperlyConfigured(f"{_rate_setting} is '<count>/<second|minute|hour|day>' or empty (off).")
# Largest page size a list endpoint serves (?limit= or ?page_size=); larger requests are clamped.
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=1000)
# How far in the future a record's timestamp may be (clock skew allowance).
INGEST_MAX_FUTURE_SKEW = timedelta(seconds=env.int("INGEST_MAX_FUTURE_SKEW_SECONDS", default=300))

# OTLP receiver (/v1/traces): which span or resource attributes give a GenAI span's tenant (slug)
# and each tag ("tag.<key>"), in order of preference. Entries in the environment's JSON object
# replace the default's entry of the same key (an empty list drops it). See .env.example.
OTLP_ATTRIBUTE_MAPPING = {
    "tenant": ["chargeback.tenant", "tenant.id"],
    "tag.feature": ["chargeback.feature", "service.name"],
    "tag.customer": ["chargeback.customer", "customer.id"],
    "tag.prompt_template": ["chargeback.prompt_template", "gen_ai.prompt.template", "traceloop.entity.name"],
    "tag.environment": ["deployment.environment.name", "deployment.environment"],
    "tag.user": ["user.id", "enduser.id"],
    "tag.operation": ["gen_ai.operation.name", "llm.request.type"],
    # A span attribute with the application's digest of the prompt (see "Cost optimisation").
    "prompt_hash": ["chargeback.prompt_hash"],
    **env.json("OTLP_ATTRIBUTE_MAPPING", default={}),
}
# LiteLLM callback (/api/v1/integrations/litellm/): fields of a payload's `metadata` (dotted paths)
# that may name the tenant, in order; the first that is a tenant the key may write wins, else the
# key's own tenant. LiteLLM batches carry prompts and responses, hence a body limit of their own.
LITELLM_TENANT_FIELDS = env.list(
    "LITELLM_TENANT_FIELDS",
    default=[
        "requester_metadata.chargeback_tenant",
        "user_api_key_team_alias",
        "user_api_key_team_id",
        "user_api_key_org_id",
    ],
)
LITELLM_MAX_BODY_BYTES = env.int("LITELLM_MAX_BODY_BYTES", default=64 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "chargeback.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "chargeback.pagination.LimitOffsetPagination",
    "DEFAULT_PARSER_CLASSES": [
        "chargeback.parsers.JsonParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "chargeback.errors.api_exception_handler",
    # An unknown ?format= is a 400, not DRF's 404.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "chargeback.negotiation.ContentNegotiation",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "chargeback API",
    "DESCRIPTION": "LLM cost observability and chargeback: ingestion, costs, budgets, statements.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {"BearerApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "cbk_..."}}
    },
    "SECURITY": [{"BearerApiKey": []}],
    "ENUM_NAME_OVERRIDES": {
        "UsageStatusEnum": "chargeback.models.UsageStatus",
        "StatementStatusEnum": "chargeback.models.Statement.Status",
        "DeliveryStatusEnum": "budgets.models.NotificationDelivery.Status",
        "AnomalyStatusEnum": "insights.models.Anomaly.Status",
        "AnomalyGranularityEnum": "insights.models.Granularity",
        "SeriesDimensionEnum": "insights.models.SeriesDimension",
        "RootCauseDimensionEnum": "insights.models.RootCauseDimension",
    },
}

# Redis for budget counters (the allowance check) and the shared cache; empty: counters off, the
# allowance check reads the database, and the cache is a folder under var/.
REDIS_URL = env.str("REDIS_URL", default="")
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", default="chargeback")
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # What the cache holds (debounce marks, the /metrics answer) is not worth a request's
            # time: a hung Redis costs a request at most this, not redis-py's default 5 s.
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        }
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    )
}
# Budgets: how often beat evaluates every budget and reconciles counters, how long ingestion waits
# to batch an evaluation after a record, and how long a process caches budget definitions.
BUDGET_EVALUATION_INTERVAL_SECONDS = env.int("BUDGET_EVALUATION_INTERVAL_SECONDS", default=60)
BUDGET_EVALUATION_DEBOUNCE_SECONDS = env.int("BUDGET_EVALUATION_DEBOUNCE_SECONDS", default=3)
BUDGET_DEFINITION_CACHE_SECONDS = env.int("BUDGET_DEFINITION_CACHE_SECONDS", default=5)

# E-mail for notification channels, e.g. smtp://user:password@mail.example.com:587 (django-environ's
# EMAIL_URL forms); the default prints messages to the console.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="chargeback@localhost")

# Statements: number prefix (CB-2026-000042), the local day of the month drafts for the previous
# month are generated, and whether (and after how many days) beat finalizes them.
STATEMENT_NUMBER_PREFIX = env.str("STATEMENT_NUMBER_PREFIX", default="CB")
# Who issues statements (shown in each statement's header).
STATEMENT_ISSUER_NAME = env.str("STATEMENT_ISSUER_NAME", default="chargeback")
STATEMENT_GENERATION_DAY = env.int("STATEMENT_GENERATION_DAY", default=1)
STATEMENT_AUTO_FINALIZE = env.bool("STATEMENT_AUTO_FINALIZE", default=True)
STATEMENT_FINALIZE_GRACE_DAYS = env.int("STATEMENT_FINALIZE_GRACE_DAYS", default=3)

# /metrics (Prometheus): empty METRICS_TOKEN leaves it open (as Prometheus expects by default),
# else scrapers send `Authorization: Bearer <token>`. Each scrape queries the rollups; the answer
# is shared through the cache for METRICS_CACHE_SECONDS so that several scrapers pay once.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_CACHE_SECONDS = env.int("METRICS_CACHE_SECONDS", default=10)

# Timeout of each outgoing webhook or Slack request of a budget notification.
NOTIFICATION_HTTP_TIMEOUT_SECONDS = env.float("NOTIFICATION_HTTP_TIMEOUT_SECONDS", default=10.0)
# Where webhook and Slack channels may send. Schemes allowed; if NOTIFICATION_ALLOWED_HOSTS is set,
# only those hosts ("hooks.slack.com", ".example.com" for a domain and its subdomains). Whatever the
# host, the address it resolves to when sending must be public (no loopback, private, link-local,
# cloud metadata, ...) unless it lies in NOTIFICATION_ALLOWED_NETWORKS (addresses or CIDR networks,
# e.g. an internal alert gateway) or NOTIFICATION_ALLOW_PRIVATE_NETWORKS is true.
NOTIFICATION_ALLOWED_SCHEMES = env.list("NOTIFICATION_ALLOWED_SCHEMES", default=["https", "http"])
NOTIFICATION_ALLOWED_HOSTS = env.list("NOTIFICATION_ALLOWED_HOSTS", default=[])
NOTIFICATION_ALLOWED_NETWORKS = env.list("NOTIFICATION_ALLOWED_NETWORKS", default=[])
NOTIFICATION_ALLOW_PRIVATE_NETWORKS = env.bool("NOTIFICATION_ALLOW_PRIVATE_NETWORKS", default=False)

# Celery: the embedded default is kombu's filesystem transport, so the demo needs no server.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    # Without socket timeouts kombu waits forever on a Redis broker that hangs (paused, or a
    # half-open connection), and with it every publish and the request making it.
    else {"socket_timeout": 5, "socket_connect_timeout": 2}
    if CELERY_BROKER_URL.startswith(("redis", "rediss", "sentinel"))
    else {}
)
if CELERY_BROKER_URL.startswith("filesystem"):
    for _folder in ("out", "processed", "control"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "usage-rollups-verify": {
        "task": "chargeback.tasks.usage_rollups_verify_recent",
        "schedule": timedelta(minutes=env.int("ROLLUP_VERIFY_INTERVAL_MINUTES", default=60)),
    },
    "statements-monthly": {
        "task": "chargeback.tasks.statements_monthly_task",
        "schedule": timedelta(hours=1),
    },
    "budgets-evaluate": {
        "task": "budgets.tasks.budgets_evaluate_all_task",
        "schedule": timedelta(seconds=BUDGET_EVALUATION_INTERVAL_SECONDS),
    },
    "budget-counters-reconcile": {
        "task": "budgets.tasks.budget_counters_reconcile_task",
        "schedule": timedelta(seconds=BUDGET_EVALUATION_INTERVAL_SECONDS),
    },
    "notification-deliveries-retry-pending": {
        "task": "budgets.tasks.notification_deliveries_retry_pending_task",
        "schedule": timedelta(minutes=5),
    },
    # Insights: anomaly detection a few minutes after each hour (its rollups complete), static
    # alert rules every few minutes, forecasts hourly, anomaly digests daily.
    "anomalies-detect": {
        "task": "insights.tasks.anomalies_detect_all_task",
        "schedule": crontab(minute=env.int("ANOMALY_DETECTION_MINUTE", default=5)),
    },
    "alert-rules-evaluate": {
        "task": "insights.tasks.alert_rules_evaluate_all_task",
        "schedule": timedelta(minutes=env.int("ALERT_RULE_EVALUATION_MINUTES", default=5)),
    },
    "forecasts-refresh": {
        "task": "insights.tasks.forecasts_refresh_all_task",
        "schedule": crontab(minute=env.int("FORECAST_REFRESH_MINUTE", default=20)),
    },
    "anomaly-digests": {
        "task": "insights.tasks.anomaly_digests_send_task",
        "schedule": crontab(minute=0, hour=env.int("ANOMALY_DIGEST_HOUR_UTC", default=8)),
    },
    # The weekly cost review of the last complete week (each tenant's own calendar), on Mondays.
    "weekly-reviews": {
        "task": "insights.tasks.weekly_reviews_send_all_task",
        "schedule": crontab(minute=30, hour=env.int("WEEKLY_REVIEW_HOUR_UTC", default=7), day_of_week=1),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
