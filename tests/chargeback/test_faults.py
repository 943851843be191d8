"""Faults around the ledger: a Celery worker killed while finalizing statements, PostgreSQL
restarted under a running web service, and an unreachable database answered with a 503.

The worker is stopped at a chosen statement by a row lock the test holds, then killed; PostgreSQL is
a private cluster of the test's own (the machine's shared server is never stopped).
"""

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from chargeback.calendar import add_months
from chargeback.models import Statement, StatementLine, StatementNumberSeries
from chargeback.services import statement_finalize, statement_generate, usage_records_ingest
from chargeback.tasks import statements_monthly_task
from tests.db_locks import locks_held
from tests.factories import ApiKeyFactory, BudgetFactory, TenantFactory
from tests.private_servers import POSTGRES_BIN, postgres_cluster, service_env, web_service
from tests.worker import celery_worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
postgres_only = pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="PostgreSQL faults: a worker stopped on a PostgreSQL row lock, a PostgreSQL server restarted",
)


def _ingest(tenant: str, records: list[dict]) -> None:
    result = usage_records_ingest(
        items=[json.dumps({"tenant": tenant, **record}).encode() for record in records], scope_tenant_ids=None
    )
    assert result.accepted == len(records), result.errors


def _usage(event_id: str, at: datetime, **fields) -> dict:
    return {"event_id": event_id, "timestamp": at.isoformat(), "provider": "openai", "model": "gpt-4o",
            "input_tokens": 12_000, "cached_input_tokens": 2_000, "output_tokens": 3_000, **fields}  # fmt: skip


def _statement_figures(statement: Statement) -> tuple:
    lines = StatementLine.objects.filter(statement=statement).order_by("position")
    return (
        statement.total_cents,
        statement.usage_cost_nanos,
        [
            (line.kind, line.description, line.quantity, line.amount_nanos, line.amount_cents)
            for line in lines
        ],
    )


@postgres_only
@pytest.mark.broker
def test_a_worker_killed_while_numbering_a_statement_loses_no_number_and_the_rerun_finalizes_the_same_figures():
    now = timezone.now()
    month_start = datetime(now.year, now.month, 1, tzinfo=UTC)
    period = f"{add_months(month_start.date(), -1):%Y-%m}"  # what the monthly run finalizes today
    earlier = f"{add_months(month_start.date(), -2):%Y-%m}"
    in_period = datetime.fromisoformat(f"{period}-10T12:00:00+00:00")
    tenants = [TenantFactory(slug=f"billable-{index}", is_billable=True) for index in range(3)]
    for index, tenant in enumerate(tenants):
        _ingest(tenant.slug, [
            _usage(f"{tenant.slug}-{n}", in_period + timedelta(hours=n), output_tokens=1_000 * (index + n + 1))
            for n in range(5)
        ] + [_usage(f"{tenant.slug}-own", in_period, provider="acme", model="in-house", cost_usd="12.345")])  # fmt: skip
    # An earlier statement is already numbered: the series row exists, and a gap would show.
    _ingest(tenants[0].slug, [_usage("earlier", datetime.fromisoformat(f"{earlier}-05T08:00:00+00:00"))])
    first = statement_finalize(statement_id=statement_generate(tenant=tenants[0], period_key=earlier).pk)
    prefix = first.number.rsplit("-", 1)[0]
    expected = {
        tenant.pk: _statement_figures(statement_generate(tenant=tenant, period_key=period))
        for tenant in tenants
    }
    worker_env = {"STATEMENT_FINALIZE_GRACE_DAYS": "0", "STATEMENT_AUTO_FINALIZE": "true"}

    # The monthly run finalizes the drafts, one at a time; the first waits for the series row.
    with (
        locks_held(
            "SELECT id FROM chargeback_statementnumberseries WHERE prefix = %s FOR UPDATE", [prefix]
        ) as wait_for_waiter,
        celery_worker(env=worker_env) as (queue, lines),
    ):
        statements_monthly_task.apply_async(queue=queue)
        wait_for_waiter(lines)
        lines.process.kill()
        lines.process.wait()
    assert not Statement.objects.filter(period_key=period, status="finalized").exists()
    assert StatementNumberSeries.objects.get(prefix=prefix).next_value == 2

    # The next run (beat's, hourly; acks_late would also redeliver it) finalizes everything.
    with celery_worker(env=worker_env) as (queue, lines):
        statements_monthly_task.apply_async(queue=queue)
        wait_for(
            lambda: Statement.objects.filter(period_key=period, status="finalized").count() == 3, lines=lines
        )
        statements_monthly_task.apply_async(queue=queue)  # and once more: nothing changes
        wait_for(lambda: sum("statements_monthly_task" in line and "succeeded" in line for line in lines) == 2,
                 lines=lines)  # fmt: skip

    statements = Statement.objects.filter(period_key=period).exclude(status="void").order_by("number")
    assert [statement.number for statement in statements] == [f"{prefix}-{n:06d}" for n in (2, 3, 4)]
    assert {statement.tenant_id: _statement_figures(statement) for statement in statements} == expected
    assert Statement.objects.filter(period_key=period).count() == 3
    assert StatementNumberSeries.objects.get(prefix=prefix).next_value == 5


def _copy_test_database(target_url: str) -> None:
    """The test database (schema, migrations, and the rows made so far) into another server."""
    settings = connection.settings_dict
    dump = subprocess.run(
        [str(POSTGRES_BIN / "pg_dump"), "--no-owner", "-h", settings.get("HOST") or "127.0.0.1",
         "-p", str(settings.get("PORT") or 5432), "-U", settings.get("USER") or "postgres", settings["NAME"]],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [shutil.which("psql") or str(POSTGRES_BIN / "psql"), "-q", "-v", "ON_ERROR_STOP=1", target_url],
        input=dump.stdout, check=True, capture_output=True,
    )  # fmt: skip


@postgres_only
@pytest.mark.skipif(POSTGRES_BIN is None, reason="needs PostgreSQL's server binaries (initdb, pg_ctl)")
def test_while_postgresql_restarts_the_api_answers_503_with_a_stable_code_and_recovers_by_itself():
    team = TenantFactory(slug="team")
    BudgetFactory(tenant=team, amount_nanos=10**9, action="block", fail_mode="open")
    _, secret = ApiKeyFactory.create_with_secret(tenant=team, scopes=["ingest", "read"])
    day = timezone.now() - timedelta(minutes=5)

    with postgres_cluster() as database:
        database.create_database("chargeback")
        _copy_test_database(database.url("chargeback"))
        with web_service(service_env(DATABASE_URL=database.url("chargeback"), CONN_MAX_AGE="60")) as web:

            def ingest(event_id):
                return web.request("POST", "/api/v1/usage/", secret=secret, body=[_usage(event_id, day)])

            def requests_counted():
                status, body = web.request("GET", "/api/v1/costs/?granularity=total", secret=secret)
                assert status == 200, body
                return body["totals"]["requests"]

            status, body = ingest("before")
            assert (status, body["accepted"]) == (200, 1)
            assert requests_counted() == 1

            database.stop()  # fast shutdown: the service's open connections are cut
            answers = [
                ingest("during"),
                web.request("GET", "/api/v1/costs/?granularity=total", secret=secret),
                web.request("POST", "/api/v1/allowance/", secret=secret, body={"estimated_cost_usd": "0.01"}),
                web.request("GET", "/api/v1/usage/", secret=secret),
            ]
            for status, body in answers:
                assert status == 503, (status, body, web.log_tail())
                assert body["error"]["code"] == "database_unavailable"
            assert web.request("GET", "/healthz")[0] == 503

            database.start()  # the same service, not restarted
            status, body = ingest("during")  # the client's retry of the batch refused above
            assert (status, body["accepted"]) == (200, 1), (body, web.log_tail())
            status, body = ingest("after")
            assert (status, body["accepted"]) == (200, 1)
            assert requests_counted() == 3
            assert web.request("GET", "/healthz")[0] == 200


def test_an_unreachable_database_is_a_503_with_a_stable_code_on_every_database(client_for, database_down):
    database_down()  # reachable again, to make the key
    client = client_for(TenantFactory(slug="team"), scopes=["ingest", "read"])
    connection.close()
    connection.settings_dict.update(NAME="/nonexistent-directory/chargeback.sqlite3", PORT="1")
    response = client.post("/api/v1/usage/", data=json.dumps([_usage("e1", timezone.now())]),
                           content_type="application/json")  # fmt: skip
    database_down()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response["Retry-After"] == "5"
