import json
import logging
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from kombu.exceptions import OperationalError

from budgets.models import Budget, BudgetAlert, NotificationChannel, NotificationDelivery
from budgets.notifications import (
    DeliveryAbandoned,
    DeliveryFailed,
    alert_payload,
    notification_channel_send_test,
    notification_channels_for_tenant,
    notification_deliver,
    notification_deliveries_create,
    notification_deliveries_retry_pending,
    webhook_signature,
    webhook_signature_verify,
)
from budgets.tasks import notification_deliver_task
from tests.factories import NotificationChannelFactory, TenantFactory

pytestmark = pytest.mark.django_db

SUMMARY = "Budget alert: team / Monthly LLM crossed 80.00% (actual): $85.00 of $100.00 spent"


@pytest.fixture
def enqueued(monkeypatch):
    """Delivery ids queued for the delivery task, instead of publishing to the broker."""
    ids: list[int] = []
    monkeypatch.setattr(notification_deliver_task, "delay", ids.append)
    return ids


def _delivery(channel, alert):
    return NotificationDelivery.objects.create(channel=channel, alert=alert, payload=alert_payload(alert))


# Payload


def test_alert_payload(alert_for):
    alert = alert_for(TenantFactory(slug="team"), action=Budget.Action.BLOCK)
    payload = alert_payload(alert)
    created_at = payload.pop("created_at")
    assert payload == {
        "type": "budget.threshold_crossed",
        "alert_id": alert.pk,
        "budget": {"id": alert.budget_id, "name": "Monthly LLM", "tenant": "team"},
        "kind": "actual",
        "threshold_percent": "80.00",
        "period": {"key": "2026-03", "start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"},
        "spent_usd": "85.000000000",
        "amount_usd": "100.000000000",
        "forecast_usd": None,
        "percent_used": "85.00",
        "action": "block",
    }
    assert created_at.endswith("Z")
    assert json.loads(json.dumps(payload)) == payload


def test_alert_payload_forecast_and_rounding(alert_for):
    alert = alert_for(TenantFactory(), kind=BudgetAlert.Kind.FORECAST, forecast_nanos=123_456_789_012)
    BudgetAlert.objects.filter(pk=alert.pk).update(spent_nanos=2, amount_nanos=3)
    alert.refresh_from_db()
    payload = alert_payload(alert)
    assert payload["kind"] == "forecast"
    assert payload["forecast_usd"] == "123.456789012"
    assert payload["percent_used"] == "66.67"


# Channels


def test_a_child_without_channels_uses_its_nearest_ancestors(django_assert_max_num_queries):
    root = TenantFactory(slug="root")
    team = TenantFactory(slug="team", parent=root)
    project = TenantFactory(slug="project", parent=team)
    root_channel = NotificationChannelFactory(tenant=root, name="root hook")
    team_channels = [
        NotificationChannelFactory(tenant=team, name="b team mail", kind="email", target="a@example.com"),
        NotificationChannelFactory(tenant=team, name="a team hook"),
    ]
    NotificationChannelFactory(tenant=project, name="off", is_active=False)

    with django_assert_max_num_queries(2):
        channels = notification_channels_for_tenant(project)
    assert channels == sorted(team_channels, key=lambda channel: channel.name)
    assert notification_channels_for_tenant(team) == channels
    assert notification_channels_for_tenant(root) == [root_channel]


def test_a_child_with_its_own_channels_uses_only_those():
    root = TenantFactory(slug="root")
    team = TenantFactory(slug="team", parent=root)
    NotificationChannelFactory(tenant=root)
    own = NotificationChannelFactory(tenant=team)
    assert notification_channels_for_tenant(team) == [own]


def test_no_channels_anywhere_means_no_deliveries(alert_for, enqueued):
    assert notification_channels_for_tenant(TenantFactory()) == []
    assert notification_deliveries_create(alert=alert_for(TenantFactory())) == []


# Deliveries


def test_deliveries_are_created_once_per_channel_and_sent_after_commit(
    alert_for, enqueued, django_capture_on_commit_callbacks
):
    root = TenantFactory(slug="root")
    team = TenantFactory(slug="team", parent=root)
    hook = NotificationChannelFactory(tenant=root, kind="webhook")
    mailbox = NotificationChannelFactory(tenant=root, kind="email", target="finops@example.com")
    alert = alert_for(team)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        first = notification_deliveries_create(alert=alert)
        assert enqueued == []  # not before the transaction commits
    assert len(callbacks) == 2
    assert {delivery.channel for delivery in first} == {hook, mailbox}
    assert all(delivery.status == "pending" and delivery.attempts == 0 for delivery in first)
    assert all(delivery.payload == alert_payload(alert) for delivery in first)
    assert sorted(enqueued) == sorted(delivery.pk for delivery in first)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = notification_deliveries_create(alert=alert)
    assert callbacks == []
    assert sorted(delivery.pk for delivery in second) == sorted(delivery.pk for delivery in first)
    assert NotificationDelivery.objects.count() == 2


def test_an_unreachable_broker_leaves_the_delivery_pending_for_the_retry_job(
    alert_for, monkeypatch, django_capture_on_commit_callbacks, caplog
):
    def broker_down(delivery_id):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(notification_deliver_task, "delay", broker_down)
    team = TenantFactory()
    NotificationChannelFactory(tenant=team)
    with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
        [delivery] = notification_deliveries_create(alert=alert_for(team))
    assert "Could not enqueue notification delivery" in caplog.text
    delivery.refresh_from_db()
    assert delivery.status == "pending"

    enqueued: list[int] = []
    monkeypatch.setattr(notification_deliver_task, "delay", enqueued.append)
    assert notification_deliveries_retry_pending() == 0  # too recent: its task may still be queued
    assert notification_deliveries_retry_pending(now=timezone.now() + timedelta(minutes=2)) == 1
    assert enqueued == [delivery.pk]


def test_the_retry_job_skips_finished_deliveries_and_waits_out_retries(alert_for, enqueued):
    team = TenantFactory()
    alert = alert_for(team)
    never_tried, retrying, sent, failed = (
        _delivery(NotificationChannelFactory(tenant=team), alert) for _ in range(4)
    )
    NotificationDelivery.objects.filter(pk=retrying.pk).update(attempts=2)
    NotificationDelivery.objects.filter(pk=sent.pk).update(status="sent", attempts=1)
    NotificationDelivery.objects.filter(pk=failed.pk).update(status="failed", attempts=7)
    now = timezone.now()

    assert notification_deliveries_retry_pending(now=now + timedelta(minutes=5)) == 1
    assert enqueued == [never_tried.pk]
    enqueued.clear()
    assert notification_deliveries_retry_pending(now=now + timedelta(minutes=20)) == 2
    assert enqueued == [never_tried.pk, retrying.pk]


# Webhooks


def test_webhook_delivery_is_signed_with_the_channel_secret(alert_for, receiver):
    team = TenantFactory(slug="team")
    channel = NotificationChannelFactory(tenant=team, target=receiver.url, secret="s3cret")
    delivery = _delivery(channel, alert_for(team))

    before = int(time.time())
    result = notification_deliver(delivery_id=delivery.pk)

    assert (result.status, result.attempts, result.response_code, result.last_error) == ("sent", 1, 200, "")
    [request] = receiver.requests
    headers = request.headers
    assert request.path == "/hook"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Chargeback-Delivery"] == str(delivery.pk)
    timestamp = headers["X-Chargeback-Timestamp"]
    assert before <= int(timestamp) <= time.time()
    assert json.loads(request.body) == delivery.payload
    assert request.body == json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    signature = headers["X-Chargeback-Signature"]
    assert signature == webhook_signature("s3cret", timestamp, request.body)
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64

    assert webhook_signature_verify("s3cret", timestamp, request.body, signature)
    assert webhook_signature_verify("s3cret", timestamp, request.body.decode(), signature)
    assert not webhook_signature_verify("wrong", timestamp, request.body, signature)
    tampered = request.body.replace(b'"85.000000000"', b'"1.000000000"')
    assert tampered != request.body
    assert not webhook_signature_verify("s3cret", timestamp, tampered, signature)
    assert not webhook_signature_verify("s3cret", int(timestamp) + 1, request.body, signature)


def test_webhook_signatures_expire():
    body, old = b'{"a":1}', int(time.time()) - 3600
    signature = webhook_signature("s3cret", old, body)
    assert not webhook_signature_verify("s3cret", old, body, signature)
    assert webhook_signature_verify("s3cret", old, body, signature, tolerance_seconds=4000)
    assert webhook_signature_verify("s3cret", old, body, signature, now=old + 299)
    assert not webhook_signature_verify("s3cret", old, body, signature, now=old - 301)
    assert not webhook_signature_verify("s3cret", "not-a-number", body, signature)
    assert not webhook_signature_verify("s3cret", old, body, "", now=old)


def test_a_webhook_without_a_secret_is_sent_unsigned(alert_for, receiver):
    team = TenantFactory()
    channel = NotificationChannelFactory(tenant=team, target=receiver.url, secret="")
    notification_deliver(delivery_id=_delivery(channel, alert_for(team)).pk)
    assert "X-Chargeback-Signature" not in receiver.requests[0].headers


def test_a_failing_receiver_records_the_attempt_and_raises(alert_for, receiver):
    receiver.fail_first = 2
    team = TenantFactory()
    delivery = _delivery(NotificationChannelFactory(tenant=team, target=receiver.url), alert_for(team))

    with pytest.raises(DeliveryFailed):
        notification_deliver(delivery_id=delivery.pk, final_attempt=False)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, 500)
    assert delivery.last_error == "HTTP 500: receiver is down"

    with pytest.raises(DeliveryFailed):
        notification_deliver(delivery_id=delivery.pk)  # the last attempt
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 2, 500)

    # A finished delivery is not sent again, whatever queues it.
    assert notification_deliver(delivery_id=delivery.pk).attempts == 2
    assert len(receiver.requests) == 2


def test_a_network_error_is_a_failed_attempt(alert_for, receiver):
    team = TenantFactory()
    url = receiver.url.replace("127.0.0.1", "localhost.invalid")
    delivery = _delivery(NotificationChannelFactory(tenant=team, target=url), alert_for(team))
    with pytest.raises(DeliveryFailed):
        notification_deliver(delivery_id=delivery.pk, final_attempt=False)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, None)
    assert "URLError" in delivery.last_error


def test_outgoing_requests_time_out(alert_for, receiver, settings):
    settings.NOTIFICATION_HTTP_TIMEOUT_SECONDS = 0.2
    receiver.delay_seconds = 2
    team = TenantFactory()
    delivery = _delivery(NotificationChannelFactory(tenant=team, target=receiver.url), alert_for(team))
    started = time.monotonic()
    with pytest.raises(DeliveryFailed):
        notification_deliver(delivery_id=delivery.pk)
    assert time.monotonic() - started < 1.5
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert "timed out" in delivery.last_error


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/x", "not a url"])
def test_a_target_that_is_not_an_http_url_is_abandoned(alert_for, target):
    team = TenantFactory()
    delivery = _delivery(NotificationChannelFactory(tenant=team, target=target), alert_for(team))
    with pytest.raises(DeliveryAbandoned):
        notification_deliver(delivery_id=delivery.pk, final_attempt=False)
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert "not an http(s) URL" in delivery.last_error


def test_a_deactivated_channel_gets_nothing(alert_for, receiver):
    team = TenantFactory()
    channel = NotificationChannelFactory(tenant=team, target=receiver.url)
    delivery = _delivery(channel, alert_for(team))
    NotificationChannel.objects.filter(pk=channel.pk).update(is_active=False)
    result = notification_deliver(delivery_id=delivery.pk)
    assert (result.status, result.attempts, result.last_error) == ("failed", 0, "channel is inactive")
    assert receiver.requests == []


# Slack and e-mail


def test_slack_payload_is_a_readable_text(alert_for, receiver):
    team = TenantFactory(slug="team")
    channel = NotificationChannelFactory(tenant=team, kind="slack", target=receiver.url)
    delivery = _delivery(channel, alert_for(team, action=Budget.Action.BLOCK))

    assert notification_deliver(delivery_id=delivery.pk).status == "sent"
    [request] = receiver.requests
    assert request.headers["Content-Type"] == "application/json"
    assert "X-Chargeback-Signature" not in request.headers
    body = json.loads(request.body)
    assert list(body) == ["text"]
    summary, *details = body["text"].split("\n")
    assert summary == SUMMARY
    assert "Period: 2026-03 (2026-03-01T00:00:00Z to 2026-04-01T00:00:00Z)" in details
    assert "Action: block" in details


def test_slack_forecast_alert_names_the_forecast(alert_for, receiver):
    team = TenantFactory(slug="team")
    channel = NotificationChannelFactory(tenant=team, kind="slack", target=receiver.url)
    alert = alert_for(team, kind=BudgetAlert.Kind.FORECAST, forecast_nanos=1_234_567_890_000)
    notification_deliver(delivery_id=_delivery(channel, alert).pk)
    text = json.loads(receiver.requests[0].body)["text"]
    assert "(forecast): forecast $1,234.57 of $100.00" in text


def test_email_delivery(alert_for):
    team = TenantFactory(slug="team")
    channel = NotificationChannelFactory(
        tenant=team, kind="email", target="finops@example.com, cto@example.com"
    )
    delivery = _delivery(channel, alert_for(team))

    result = notification_deliver(delivery_id=delivery.pk)

    assert (result.status, result.attempts, result.response_code) == ("sent", 1, None)
    [message] = mail.outbox
    assert message.to == ["finops@example.com", "cto@example.com"]
    assert message.subject == SUMMARY
    assert "Spent so far: $85.00 (85.00% of the budget)" in message.body
    assert f'"alert_id": {delivery.alert_id}' in message.body


def test_an_smtp_failure_is_a_failed_attempt(alert_for, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    team = TenantFactory()
    channel = NotificationChannelFactory(tenant=team, kind="email", target="finops@example.com")
    delivery = _delivery(channel, alert_for(team))
    with pytest.raises(DeliveryFailed):
        notification_deliver(delivery_id=delivery.pk, final_attempt=False)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert "ConnectionRefusedError" in delivery.last_error


# Test notifications


def test_send_test_delivers_synchronously(receiver):
    channel = NotificationChannelFactory(tenant=TenantFactory(slug="team"), target=receiver.url, secret="k")
    delivery = notification_channel_send_test(channel=channel)
    assert delivery.alert is None
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("sent", 1, 200)
    [request] = receiver.requests
    payload = json.loads(request.body)
    assert payload["type"] == "test"
    assert payload["channel"] == {"id": channel.pk, "name": channel.name, "kind": "webhook", "tenant": "team"}
    headers = request.headers
    assert webhook_signature_verify(
        "k", headers["X-Chargeback-Timestamp"], request.body, headers["X-Chargeback-Signature"]
    )
    # Test deliveries have no alert, so the per-alert constraint does not limit them.
    assert notification_channel_send_test(channel=channel).pk != delivery.pk


def test_send_test_reports_a_failure_instead_of_raising(receiver):
    receiver.fail_first = 1
    channel = NotificationChannelFactory(target=receiver.url)
    delivery = notification_channel_send_test(channel=channel)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 1, 500)
