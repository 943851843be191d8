"""Settings for the test suite: the service's own settings, with a throwaway secret key."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")

import chargeback.settings as service_settings

globals().update({name: value for name, value in vars(service_settings).items() if name.isupper()})

# One test database and cache per run, so that concurrent runs do not trample each other; worker
# processes started by the tests inherit the run id. On SQLite the database is a file, not memory,
# so that a real Celery worker process can share it.
RUN_ID = os.environ.setdefault("CHARGEBACK_TEST_RUN_ID", str(os.getpid()))
_database = service_settings.DATABASES["default"]
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["TEST"] = {"NAME": str(service_settings.VAR_DIR / f"test-{RUN_ID}.sqlite3")}
else:
    _database["TEST"] = {"NAME": f"test_{_database['NAME']}_{RUN_ID}"}
if service_settings.CACHES["default"]["BACKEND"].endswith("FileBasedCache"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(service_settings.VAR_DIR / f"cache-test-{RUN_ID}"),
        }
    }
else:
    CACHES = {"default": {**service_settings.CACHES["default"], "KEY_PREFIX": f"test-{RUN_ID}"}}
REDIS_KEY_PREFIX = f"chargeback-test-{RUN_ID}"
# Tasks go to a queue of this run only, so that concurrent runs on one broker never take each other's.
CELERY_TASK_DEFAULT_QUEUE = f"chargeback-test-{RUN_ID}"
# Rate limits high enough that no test meets them; the rate-limit tests set their own.
INGEST_RATE_LIMIT = "1000000/min"
ALLOWANCE_RATE_LIMIT = "1000000/min"
# The notification tests deliver to stub servers on the loopback interface: explicitly allowed
# here, refused by default (tests/budgets/test_webhook_targets.py checks both).
NOTIFICATION_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
