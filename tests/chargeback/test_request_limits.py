"""Request body limits on every endpoint (413 `payload_too_large`, gzip-decompressed sizes too)
and page size caps on the list endpoints (clamped, not refused)."""

import gzip
import json

import pytest
from django.contrib.auth.models import User

from tests.chargeback.helpers import usage_record
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

LIMIT = 2000


@pytest.fixture
def small_bodies(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT


@pytest.fixture
def team():
    return TenantFactory(slug="team")


def _budget(name_length: int) -> bytes:
    return json.dumps({"tenant": "team", "name": "x" * name_length, "amount_usd": "10"}).encode()


def test_an_oversized_json_body_is_a_413_on_any_endpoint(small_bodies, client_for, team):
    client = client_for(team, scopes=["admin"])
    for url, body in [
        ("/api/v1/budgets/", _budget(3 * LIMIT)),
        ("/api/v1/allowance/", json.dumps({"tags": {"feature": "x" * 3 * LIMIT}}).encode()),
        ("/api/v1/notification-channels/", json.dumps({"name": "x" * 3 * LIMIT}).encode()),
        ("/api/v1/statements/1/void", json.dumps({"reason": "x" * 3 * LIMIT}).encode()),
    ]:
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 413, url
        error = response.json()["error"]
        assert error["code"] == "payload_too_large", url
        assert str(LIMIT) in error["message"]


def test_other_content_types_are_bounded_too(small_bodies, client_for, team):
    client = client_for(team, scopes=["admin"])
    response = client.post("/api/v1/budgets/", {"name": "x" * 3 * LIMIT}, format="multipart")
    assert (response.status_code, response.json()["error"]["code"]) == (413, "payload_too_large")


def test_a_body_within_the_limit_is_read(small_bodies, client_for, team):
    client = client_for(team, scopes=["admin"])
    response = client.post("/api/v1/budgets/", _budget(100), content_type="application/json")
    assert response.status_code == 201, response.content


def test_gzip_bodies_are_bounded_after_decompression(small_bodies, client_for, team):
    client = client_for(team, scopes=["admin"])
    small = gzip.compress(_budget(100))
    response = client.post(
        "/api/v1/budgets/", small, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 201, response.content
    bomb = gzip.compress(_budget(50 * LIMIT))  # a few hundred bytes on the wire
    assert len(bomb) < LIMIT
    response = client.post(
        "/api/v1/budgets/", bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "payload_too_large")
    response = client.post(
        "/api/v1/budgets/", small, content_type="application/json", HTTP_CONTENT_ENCODING="br"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_content_encoding")


def test_ingestion_keeps_its_own_larger_limit(small_bodies, client_for, team, settings):
    client = client_for(team, scopes=["ingest"])
    records = [usage_record(f"e{index}", tags={"feature": "x" * 200}) for index in range(20)]
    body = json.dumps(records).encode()
    assert len(body) > LIMIT
    response = client.post("/api/v1/usage/", body, content_type="application/json")
    assert (response.status_code, response.json()["accepted"]) == (200, 20)
    # The LiteLLM callback bounds its (large) bodies by its own limit, gzip bombs included.
    settings.LITELLM_MAX_BODY_BYTES = 10_000
    bomb = gzip.compress(b"[" + b" " * 50_000 + b"]")
    response = client.post(
        "/api/v1/integrations/litellm/", bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "payload_too_large")


def test_pages_refuse_oversized_bodies(small_bodies, client):
    response = client.post("/accounts/login/", {"username": "x" * 3 * LIMIT, "password": "y"})
    assert response.status_code == 413
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "a-long-password"))
    response = client.post("/admin/tenants/tenant/add/", {"slug": "x", "name": "x" * 3 * LIMIT})
    assert response.status_code == 413


# Page sizes


def test_a_limit_above_the_maximum_is_clamped(client_for, settings):
    settings.API_MAX_PAGE_SIZE = 3
    for index in range(5):
        TenantFactory(slug=f"t{index}")
    client = client_for(None, scopes=["read"])
    page = client.get("/api/v1/tenants/?limit=1000000").json()
    assert (page["count"], len(page["results"])) == (5, 3)
    assert "limit=3" in page["next"]
    assert len(client.get("/api/v1/tenants/?limit=2").json()["results"]) == 2
    assert len(client.get("/api/v1/tenants/").json()["results"]) == 3  # the default (100), clamped too


def test_a_usage_page_size_above_the_maximum_is_clamped(client_for, settings, team):
    settings.API_MAX_PAGE_SIZE = 2
    client = client_for(team, scopes=["ingest", "read"])
    client.post("/api/v1/usage/", [usage_record(f"e{index}") for index in range(3)], format="json")
    page = client.get("/api/v1/usage/?page_size=500").json()
    assert len(page["results"]) == 2 and page["next"]
    assert len(client.get(page["next"]).json()["results"]) == 1
