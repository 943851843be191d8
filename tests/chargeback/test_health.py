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
