import pytest
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
