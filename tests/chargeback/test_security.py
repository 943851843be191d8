"""Security settings (DEBUG, SECRET_KEY, TLS cookies and HSTS), CSRF on the pages, constant-time key
comparison, and API keys never written to any log."""

import gzip
import hmac
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from django.views.debug import SafeExceptionReporterFilter
from rest_framework.test import APIClient

from tenants import authentication
from tests.chargeback.helpers import usage_record
from tests.factories import ApiKeyFactory, TenantFactory

ROOT = Path(__file__).resolve().parents[2]
_SETTINGS_SHOWN = [
    "DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_HTTPONLY", "INGEST_RATE_LIMIT",
]  # fmt: skip


def _service_settings(**env: str) -> subprocess.CompletedProcess:
    """Import the service's own settings in a fresh interpreter with exactly this environment."""
    script = (
        "import json, chargeback.settings as s; "
        f"print(json.dumps({{name: getattr(s, name, None) for name in {_SETTINGS_SHOWN!r}}}))"
    )
    clean = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env={**clean, "CHARGEBACK_VAR_DIR": str(ROOT / "var"), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_secret_key_is_required():
    result = _service_settings()
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_defaults_are_debug_off_and_plain_http_cookies():
    result = _service_settings(SECRET_KEY="x" * 50)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    assert (values["SESSION_COOKIE_SECURE"], values["CSRF_COOKIE_SECURE"], values["SECURE_HSTS_SECONDS"]) == (
        False, False, 0,
    )  # fmt: skip
    assert values["SECURE_PROXY_SSL_HEADER"] is None  # never trusted unless configured


def test_served_over_tls_cookies_are_secure_and_hsts_is_on():
    result = _service_settings(
        SECRET_KEY="x" * 50, SECURE_TLS="true", SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https"
    )
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert (values["SESSION_COOKIE_SECURE"], values["CSRF_COOKIE_SECURE"]) == (True, True)
    assert values["SECURE_HSTS_SECONDS"] == 31_536_000
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


@pytest.mark.parametrize(
    "env",
    [{"SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO"}, {"INGEST_RATE_LIMIT": "lots"}],
)
def test_malformed_security_settings_are_refused_at_start(env):
    result = _service_settings(SECRET_KEY="x" * 50, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr


def test_the_deploy_checks_pass_when_served_over_tls():
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    env.update(
        SECRET_KEY="k" * 30 + "Z9!q" * 10, SECURE_TLS="true", SECURE_SSL_REDIRECT="true",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true", SECURE_HSTS_PRELOAD="true", ALLOWED_HOSTS="chargeback.example.com",
        CHARGEBACK_VAR_DIR=str(ROOT / "var"),
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_hsts_is_sent_on_requests_a_tls_proxy_marks_secure(client, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert (
        client.get("/healthz", HTTP_X_FORWARDED_PROTO="https")["Strict-Transport-Security"] == "max-age=3600"
    )
    assert "Strict-Transport-Security" not in client.get("/healthz")


# CSRF on the pages


@pytest.mark.django_db
def test_a_page_form_posted_without_the_csrf_token_is_refused():
    User.objects.create_user("alice", "alice@example.com", "a-long-password")
    browser = Client(enforce_csrf_checks=True)
    refused = browser.post("/accounts/login/", {"username": "alice", "password": "a-long-password"})
    assert refused.status_code == 403
    assert "_auth_user_id" not in browser.session

    browser.get("/accounts/login/")  # sets the CSRF cookie, as a browser showing the form would
    token = browser.cookies["csrftoken"].value
    accepted = browser.post(
        "/accounts/login/", {"username": "alice", "password": "a-long-password", "csrfmiddlewaretoken": token}
    )
    assert accepted.status_code == 302
    assert "_auth_user_id" in browser.session


@pytest.mark.django_db
def test_admin_forms_need_the_csrf_token_too():
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(User.objects.create_superuser("admin", "admin@example.com", "a-long-password"))
    assert browser.post("/admin/tenants/tenant/add/", {"slug": "x", "name": "X"}).status_code == 403


@pytest.mark.django_db
def test_the_api_needs_no_csrf_token_it_uses_bearer_keys(client_for):
    client = client_for(TenantFactory(slug="team"), scopes=["read"])
    client.enforce_csrf_checks = True
    response = client.post("/api/v1/allowance/", {"estimated_cost_usd": "0.01"}, format="json")
    assert response.status_code == 200


# Keys


@pytest.mark.django_db
def test_keys_are_compared_in_constant_time(monkeypatch):
    api_key, secret = ApiKeyFactory.create_with_secret(tenant=TenantFactory(), scopes=["read"])
    compared = []
    real_compare_digest = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real_compare_digest(a, b)

    monkeypatch.setattr(authentication.hmac, "compare_digest", spy)
    client = APIClient()
    wrong = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")  # right prefix, wrong secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {wrong}")
    assert client.get("/api/v1/whoami/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/whoami/").status_code == 200
    assert len(compared) == 2
    assert all(stored == api_key.secret_hash for stored, _ in compared)


@pytest.mark.django_db
def test_api_keys_never_reach_the_logs(caplog, settings, monkeypatch):
    """Drive successes, authentication failures, ingestion errors and a 500 at DEBUG level, with
    error mails to admins on, and look for the secrets in every record and mail."""
    settings.ADMINS = [("ops", "ops@example.com")]
    settings.DEBUG = False
    team = TenantFactory(slug="team")
    _, secret = ApiKeyFactory.create_with_secret(tenant=team, scopes=["ingest", "read", "admin"])
    revoked, revoked_secret = ApiKeyFactory.create_with_secret(tenant=team, scopes=["read"])
    revoked.is_active = False
    revoked.save()
    near_miss = secret[:-1] + ("x" if secret[-1] != "x" else "y")
    secrets = [secret, revoked_secret, near_miss, secret.rsplit("_", 1)[1], near_miss.rsplit("_", 1)[1]]
    caplog.set_level(logging.DEBUG)

    def client(key, **extra):
        api = APIClient(raise_request_exception=False)
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}", **extra)
        return api

    ok = client(secret)
    assert ok.get("/api/v1/whoami/").status_code == 200
    assert ok.post("/api/v1/usage/", [usage_record("good")], format="json").status_code == 200
    assert ok.post("/api/v1/usage/", [{"event_id": "bad"}], format="json").status_code == 422
    assert ok.post("/api/v1/usage/", b"[{", content_type="application/json").status_code in (400, 422)
    body = gzip.compress(b"not json")
    assert (
        ok.post(
            "/api/v1/budgets/", body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
        ).status_code
        == 400
    )
    assert ok.post("/v1/traces", b"{nope", content_type="application/json").status_code == 400
    assert ok.post("/api/v1/allowance/", {"tenant": "nope"}, format="json").status_code == 404
    for key in (near_miss, revoked_secret, secret + "extra", "cbk_not-a-key", f"{secret} {secret}"):
        assert client(key).get("/api/v1/whoami/").status_code == 401
    assert client(secret).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code in (200, 401)

    def explode(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("chargeback.usage_api.usage_records_ingest", explode)
    assert ok.post("/api/v1/usage/", [usage_record("boom")], format="json").status_code == 500
    monkeypatch.setattr(authentication, "api_key_touch", explode)  # fails while the key is in hand
    assert client(secret).get("/api/v1/whoami/").status_code == 500

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    assert any(record.levelno >= logging.ERROR for record in caplog.records)  # the 500s were logged
    for record in caplog.records:
        text = formatter.format(record) + repr(record.args) + repr(vars(record))
        for value in secrets:
            assert value not in text, f"{record.name}: {record.getMessage()}"
    for message in mail.outbox:
        text = message.body + "".join(str(content) for content, _ in getattr(message, "alternatives", []))
        assert not any(value in text for value in secrets)


def test_error_reports_hide_the_authorization_header(rf):
    request = rf.get("/api/v1/whoami/", HTTP_AUTHORIZATION="Bearer cbk_0123456789ab_secret")
    meta = SafeExceptionReporterFilter().get_safe_request_meta(request)
    assert "cbk_0123456789ab_secret" not in str(meta)
