"""Every error under /api/ has the shape {"error": {"code", "message", "details"}}."""

import pytest

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
