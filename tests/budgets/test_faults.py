"""Faults around budgets: Redis (broker, cache and counters) hung or gone while usage arrives, and a
Celery worker killed in the middle of a budget evaluation.

Every server here is private to the test (a redis-server and gunicorn of its own, a real Celery
worker): the machine's shared Redis and PostgreSQL are never paused or stopped.
"""

import json
import shutil
from datetime import timedelta

import pytest
from django.db import connection  # noqa: F401  (read by the skip condition)
from django.utils import timezone

from budgets.models import BudgetAlert, NotificationDelivery
from budgets.notifications import notification_deliveries_retry_pending
from budgets.selectors import budget_current_period
from budgets.tasks import budgets_evaluate_task
from chargeback.models import UsageRecord
from chargeback.services import usage_records_ingest
from tests.db_locks import locks_held
from tests.factories import (
    ApiKeyFactory,
    BudgetFactory,
    BudgetThresholdFactory,
    NotificationChannelFactory,
    TenantFactory,
)
from tests.private_servers import redis_server, service_env, web_service
from tests.worker import celery_worker, wait_for
from tests.worker import test_database_url as worker_database_url

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


def _record(event_id: str, cost_usd: str) -> dict:
    return {"event_id": event_id, "timestamp": (timezone.now() - timedelta(minutes=1)).isoformat(),
            "provider": "acme", "model": "in-house", "input_tokens": 5, "output_tokens": 5,
            "cost_usd": cost_usd}  # fmt: skip


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for private servers")
def test_with_redis_hung_then_gone_usage_is_stored_the_allowance_reads_the_database_and_alerts_follow(
    receiver,
):
    team = TenantFactory(slug="team")
    budget = BudgetFactory(tenant=team, amount_nanos=10**9, action="block", name="Team monthly")
    BudgetThresholdFactory(budget=budget, percent=50)
    NotificationChannelFactory(tenant=team, target=receiver.url)
    _, secret = ApiKeyFactory.create_with_secret(tenant=team, scopes=["ingest", "read"])

    # The broker, and the cache with the budget counters, on two servers, so that each can fail
    # on its own as well as together.
    with redis_server() as broker, redis_server() as counters:
        redis_env = {"CELERY_BROKER_URL": broker.url(0), "REDIS_URL": counters.url(0),
                     "BUDGET_EVALUATION_INTERVAL_SECONDS": "2"}  # fmt: skip
        with web_service(service_env(DATABASE_URL=worker_database_url(), **redis_env)) as web:

            def ingest(event_id, cost_usd):
                # The client's timeout only turns a hung request into a failure; speed is not asserted.
                status, body = web.request(
                    "POST", "/api/v1/usage/", secret=secret, body=[_record(event_id, cost_usd)], timeout=60
                )
                assert (status, body["accepted"] if status == 200 else body) == (200, 1), web.log_tail()

            def allowance():
                """(allowed, source, spent, fresh) of an allowance check."""
                status, body = web.request("POST", "/api/v1/allowance/", secret=secret,
                                           body={"estimated_cost_usd": "0.01"}, timeout=60)  # fmt: skip
                assert status == 200, (body, web.log_tail())
                return body["allowed"], body["source"], body["spent_usd"], body["fresh"]

            def health():
                status, body = web.request("GET", "/healthz", timeout=60)
                return status, body["database"]["ok"], body["broker"]["ok"]

            broker.pause()  # hung: connections are accepted, nothing answers
            ingest("broker-hung", "0.40")  # its budget evaluation cannot be queued
            assert health() == (200, True, False)
            assert allowance()[1] == "counters"

            counters.pause()
            ingest("both-hung", "0.70")
            assert allowance() == (False, "database", "1.100000000", True)
            assert web.request("GET", "/metrics", timeout=60)[0] == 200

            broker.kill()  # gone: connections reset, the ports refuse, whatever they held is lost
            counters.kill()
            ingest("both-gone", "0.05")
            assert allowance() == (False, "database", "1.150000000", True)
            assert health() == (200, True, False)
            assert web.request("GET", "/metrics", timeout=60)[0] == 200

            broker.start()  # back, empty, on the same ports
            counters.start()
            with celery_worker(beat=True, env=redis_env) as (_, lines):
                # Beat's periodic evaluation catches the crossing that ingestion could not queue,
                # and its reconciliation rebuilds the counters the restart lost.
                wait_for(lambda: len(receiver.requests) >= 1, timeout=60, lines=lines)
                wait_for(
                    lambda: allowance() == (False, "counters", "1.150000000", True), timeout=60, lines=lines
                )
                ingest("after", "0.01")
                assert health() == (200, True, True)

    assert sorted(UsageRecord.objects.values_list("event_id", flat=True)) == [
        "after", "both-gone", "both-hung", "broker-hung",
    ]  # fmt: skip
    assert BudgetAlert.objects.count() == 1
    assert NotificationDelivery.objects.get().status == "sent"
    assert len(receiver.requests) == 1


@pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="stops the worker on PostgreSQL locks (and reads pg_stat_activity to know it waits there)",
)
def test_workers_killed_during_evaluation_commit_and_delivery_leave_one_alert_and_one_delivery_each(receiver):
    team = TenantFactory(slug="team")
    budget = BudgetFactory(tenant=team, amount_nanos=10**9, action="notify", name="Team monthly")
    half, full = (BudgetThresholdFactory(budget=budget, percent=percent) for percent in (50, 100))
    NotificationChannelFactory(tenant=team, target=receiver.url)
    stored = usage_records_ingest(
        items=[json.dumps({**_record("big", "1.20"), "tenant": "team"}).encode()], scope_tenant_ids=None
    )
    assert stored.accepted == 1
    period = budget_current_period(budget, timezone.now())

    def killed_while_waiting(wait_for_waiter):
        with celery_worker() as (queue, lines):
            budgets_evaluate_task.apply_async(args=[[budget.pk]], queue=queue)
            wait_for_waiter(lines)
            lines.process.kill()
            lines.process.wait()

    # 1. Killed inside the transaction: inserting the 50 % alert waits for the same key, inserted
    # (not yet committed) by the test. Nothing is recorded.
    with locks_held(
        "INSERT INTO budgets_budgetalert (budget_id, threshold_id, period_key, kind, spent_nanos, amount_nanos,"
        " period_start, period_end, created_at) VALUES (%s, %s, %s, 'actual', 0, 0, %s, %s, now())",
        [budget.pk, half.pk, period.key, period.start, period.end],
    ) as wait_for_waiter:
        killed_while_waiting(wait_for_waiter)
    assert BudgetAlert.objects.count() == 0

    # 2. Killed in COMMIT: its deferred foreign-key check waits for the budget row the test holds.
    # The server commits the 50 % alert and its delivery, but the worker never queues the send.
    with locks_held("SELECT id FROM budgets_budget WHERE id = %s FOR UPDATE", [budget.pk]) as wait_for_waiter:
        killed_while_waiting(wait_for_waiter)
    assert list(BudgetAlert.objects.values_list("threshold_id", flat=True)) == [half.pk]
    assert list(NotificationDelivery.objects.values_list("status", "attempts")) == [("pending", 0)]

    # 3. The next evaluation (beat's, every minute; here at once) records the 100 % alert and is
    # killed while the receiver holds its notification unanswered.
    receiver.hold.set()
    with celery_worker() as (queue, lines):
        budgets_evaluate_task.apply_async(args=[[budget.pk]], queue=queue)
        wait_for(receiver.held.is_set, lines=lines)
        lines.process.kill()
        lines.process.wait()
    receiver.hold.clear()

    # 4. The retry job (every five minutes) re-enqueues deliveries once their task is surely lost;
    # its clock is moved past that point rather than waited for. Then one more evaluation.
    with celery_worker() as (queue, lines):
        assert notification_deliveries_retry_pending(now=timezone.now() + timedelta(minutes=20)) == 2
        wait_for(lambda: not NotificationDelivery.objects.filter(status="pending").exists(), lines=lines)
        budgets_evaluate_task.apply_async(args=[[budget.pk]], queue=queue)
        wait_for(lambda: any("budgets_evaluate_task" in line and "succeeded" in line for line in lines),
                 lines=lines)  # fmt: skip

    assert sorted(BudgetAlert.objects.values_list("threshold_id", "kind")) == [
        (half.pk, "actual"), (full.pk, "actual"),
    ]  # fmt: skip
    deliveries = {delivery.alert.threshold_id: delivery for delivery in NotificationDelivery.objects.all()}
    assert {key: (value.status, value.attempts) for key, value in deliveries.items()} == {
        half.pk: ("sent", 1), full.pk: ("sent", 2),
    }  # fmt: skip
    # The notification cut off by the kill went out again (sending is at least once) under the same
    # delivery id, by which receivers deduplicate; the other exactly once.
    assert sorted(request.headers["X-Chargeback-Delivery"] for request in receiver.requests) == sorted(
        [str(deliveries[half.pk].pk), str(deliveries[full.pk].pk), str(deliveries[full.pk].pk)]
    )
