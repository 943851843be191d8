import pytest

pytestmark = pytest.mark.django_db


def test_tenant_list_requires_a_key(api_client):
    response = api_client.get("/api/v1/tenants/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
