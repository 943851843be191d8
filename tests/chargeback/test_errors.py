"""Every error under /api/ has the shape {"error": {"code", "message", "details"}}."""

import pytest
from django.db import DataError

from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def _assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "details" in error
    return error


def test_missing_credentials(api_client):
    response = api_client.get("/api/v1/usage/")
    _assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Bearer"


def test_malformed_authorization_header(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    _assert_error(api_client.get("/api/v1/usage/"), 401, "authentication_failed")


def test_wrong_key(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer cbk_000000000000_nope")
    _assert_error(api_client.get("/api/v1/usage/"), 401, "authentication_failed")


def test_missing_scope(client_for):
    _assert_error(client_for(TenantFactory(), scopes=["read"]).post("/api/v1/usage/", [], format="json"), 403,
                  "scope_missing")  # fmt: skip


def test_invalid_filter_value(client_for):
    error = _assert_error(client_for(None).get("/api/v1/usage/?status=bogus"), 400, "validation_error")
    assert "status" in error["details"]


def test_invalid_tag_filter_key(client_for):
    _assert_error(client_for(None).get("/api/v1/usage/?tag.bad%20key=1"), 400, "validation_error")


def test_unknown_api_url(client_for):
    _assert_error(client_for(None).get("/api/v1/nothing-here/"), 404, "not_found")


def test_unknown_object(client_for):
    _assert_error(client_for(None).get("/api/v1/tenants/missing/"), 404, "not_found")


def test_method_not_allowed(client_for):
    _assert_error(client_for(None).delete("/api/v1/usage/"), 405, "method_not_allowed")


def test_unsupported_media_type(client_for):
    response = client_for(None).post(
        "/api/v1/usage/", data="a=b", content_type="application/x-www-form-urlencoded"
    )
    _assert_error(response, 415, "unsupported_media_type")


def test_body_too_large(client_for, settings):
    settings.INGEST_MAX_BODY_BYTES = 1000
    body = b"[" + b" " * 2000 + b"]"
    response = client_for(TenantFactory()).post("/api/v1/usage/", data=body, content_type="application/json")
    _assert_error(response, 413, "payload_too_large")


def test_unexpected_error_is_a_json_500(client_for, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("chargeback.usage_api.usage_record_list", explode)
    error = _assert_error(client_for(None).get("/api/v1/usage/"), 500, "internal_error")
    assert "boom" not in error["message"]


def test_pages_outside_the_api_keep_html_errors(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_a_value_the_database_refuses_is_a_400(client_for, monkeypatch):
    """Found by schema fuzzing on PostgreSQL: a NUL character (or a number out of the column's range)
    reaching a query raised DataError, a 500. It is bad input."""

    def refuse(**kwargs):
        raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    monkeypatch.setattr("chargeback.usage_api.usage_record_list", refuse)
    _assert_error(client_for(None).get("/api/v1/usage/"), 400, "invalid_value")


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/budgets/", {"name": "b", "amount_usd": "5", "period": "month"}),
        ("/api/v1/routing-policies/", {"name": "p", "rules": []}),
        (
            "/api/v1/notification-channels/",
            {"name": "c", "kind": "webhook", "target": "https://example.com/h"},
        ),
        ("/api/v1/anomaly-subscriptions/", {"name": "s"}),
        ("/api/v1/alert-rules/", {"name": "r", "metric": "cost", "window": "day", "threshold": "1"}),
    ],
)
def test_a_nul_character_in_a_tenant_slug_is_a_validation_error(client_for, url, body):
    """Found by schema fuzzing on PostgreSQL: the tenant's slug went to the database as it was, and
    PostgreSQL refuses to compare text with a NUL character (a 500)."""
    TenantFactory(slug="team")
    response = client_for(None, scopes=["admin"]).post(url, {**body, "tenant": "te\x00am"}, format="json")
    error = _assert_error(response, 400, "validation_error")
    assert "tenant" in error["details"]


@pytest.mark.parametrize("url", ["/api/v1/costs/", "/api/v1/tenants/", "/api/v1/statements/"])
def test_an_unknown_format_is_a_400(client_for, url):
    """Found by schema fuzzing: DRF answers `?format=<no renderer's>` with 404 "Not found." (as if
    the URL did not exist); it is an invalid parameter."""
    error = _assert_error(client_for(None).get(url, {"format": "xml"}), 400, "validation_error")
    assert "format" in error["details"]


def test_a_known_format_still_chooses_the_renderer(client_for):
    response = client_for(None).get("/api/v1/costs/", {"format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
