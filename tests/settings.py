"""Settings for the test suite: the service's own settings, with a throwaway secret key."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")

import chargeback.settings as service_settings

globals().update({name: value for name, value in vars(service_settings).items() if name.isupper()})

# One test database per run, so that concurrent runs do not trample each other. On SQLite it is a
# file, not memory, so that a real Celery worker process can share it.
_database = service_settings.DATABASES["default"]
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["TEST"] = {"NAME": str(service_settings.VAR_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    _database["TEST"] = {"NAME": f"test_{_database['NAME']}_{os.getpid()}"}
