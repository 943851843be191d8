import pytest
from django.db import connection


@pytest.mark.django_db
def test_healthz_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == {"ok": True, "vendor": connection.vendor}
    assert body["broker"]["ok"] is True
    assert body["status"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_healthz_is_503_when_the_database_is_down(client, database_down):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"]["ok"] is False
    assert body["database"]["error"]
    assert body["status"] == "degraded"


@pytest.mark.django_db(transaction=True)
def test_healthz_recovers_without_a_restart_when_the_database_returns(client, database_down):
    assert client.get("/healthz").status_code == 503
    database_down()
    assert client.get("/healthz").status_code == 200
