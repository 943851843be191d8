"""End to end: a real Celery worker and beat on the real broker (filesystem on SQLite, Redis in
CI), the HTTP API, and a local webhook receiver."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from budgets.models import BudgetAlert
from budgets.notifications import webhook_signature_verify
from tests.factories import BudgetFactory, BudgetThresholdFactory, NotificationChannelFactory, TenantFactory
from tests.worker import celery_worker, wait_for


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_ingesting_past_a_threshold_sends_exactly_one_signed_alert(client_for, receiver):
    team = TenantFactory(slug="team")
    budget = BudgetFactory(tenant=team, amount_nanos=10**9, name="Team monthly")
    BudgetThresholdFactory(budget=budget, percent=50)
    channel = NotificationChannelFactory(tenant=team, target=receiver.url, secret="whsec-integration")
    client = client_for(team, scopes=["ingest"])

    def post(event_id, cost):
        record = {"event_id": event_id, "timestamp": (timezone.now() - timedelta(minutes=1)).isoformat(),
                  "provider": "acme", "model": "in-house", "input_tokens": 5, "output_tokens": 5,
                  "cost_usd": cost}  # fmt: skip
        response = client.post("/api/v1/usage/", data=json.dumps([record]), content_type="application/json")
        assert response.json()["accepted"] == 1

    with celery_worker(beat=True, env={"BUDGET_EVALUATION_INTERVAL_SECONDS": "2"}) as (_, lines):
        post("below", "0.30")
        time.sleep(4)  # beat and the debounced evaluation both run: nothing to send yet
        assert receiver.requests == []
        post("crossing", "0.25")
        wait_for(lambda: len(receiver.requests) >= 1, timeout=60, lines=lines)
        post("after", "0.10")
        time.sleep(6)  # more evaluations by beat and by ingestion: still one alert
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert webhook_signature_verify(
        channel.secret, headers["x-chargeback-timestamp"], request.body, headers["x-chargeback-signature"]
    )
    payload = json.loads(request.body)
    assert (payload["type"], payload["budget"]["id"], payload["spent_usd"]) == (
        "budget.threshold_crossed", budget.pk, "0.550000000",
    )  # fmt: skip
    assert BudgetAlert.objects.count() == 1
