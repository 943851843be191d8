import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import ApiKeyFactory


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def client_for():
    """An API client authenticated with a new key for `tenant` (None: a global key) and `scopes`."""

    def make(tenant=None, scopes=("ingest", "read")):
        _, secret = ApiKeyFactory.create_with_secret(tenant=tenant, scopes=list(scopes))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return make


@pytest.fixture
def database_down():
    """Point the default connection at a database that cannot be reached; yields a restore function."""
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-directory/chargeback.sqlite3"
    else:
        connection.settings_dict["PORT"] = "1"  # nothing listens on port 1

    def restore():
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)

    yield restore
    restore()
