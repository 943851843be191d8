"""Budget tasks. Most run eagerly: `apply()` runs the autoretry chain synchronously, without waiting
out the countdowns; one runs on a real worker to show the task is registered and routable."""

import pytest
from celery import states

from budgets.models import NotificationDelivery
from budgets.notifications import alert_payload, notification_deliveries_create
from budgets.tasks import notification_deliver_task, notification_deliveries_retry_pending_task
from tests.factories import NotificationChannelFactory, TenantFactory
from tests.worker import celery_worker, wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivery_to(alert_for):
    def make(url):
        team = TenantFactory()
        channel = NotificationChannelFactory(tenant=team, target=url)
        alert = alert_for(team)
        return NotificationDelivery.objects.create(channel=channel, alert=alert, payload=alert_payload(alert))

    return make


def test_retry_configuration():
    assert notification_deliver_task.max_retries == 6
    assert notification_deliver_task.retry_backoff
    assert notification_deliver_task.retry_backoff_max == 600
    assert not notification_deliver_task.acks_late


def test_the_task_retries_until_the_receiver_recovers(receiver, delivery_to):
    receiver.fail_first = 2
    delivery = delivery_to(receiver.url)

    result = notification_deliver_task.apply(args=[delivery.pk])

    assert result.state == states.SUCCESS
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("sent", 3, 200)
    assert delivery.last_error == ""
    delivery_ids = {request.headers["X-Chargeback-Delivery"] for request in receiver.requests}
    assert (len(receiver.requests), delivery_ids) == (3, {str(delivery.pk)})


def test_the_task_fails_the_delivery_after_the_last_retry(receiver, delivery_to):
    receiver.fail_first = 1000
    delivery = delivery_to(receiver.url)

    result = notification_deliver_task.apply(args=[delivery.pk])

    assert result.state == states.FAILURE
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 7, 500)
    assert len(receiver.requests) == 1 + notification_deliver_task.max_retries


def test_the_task_does_not_retry_what_cannot_succeed(delivery_to):
    delivery = delivery_to("file:///etc/passwd")
    result = notification_deliver_task.apply(args=[delivery.pk])
    assert result.state == states.FAILURE
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 1)


def test_the_task_ignores_a_deleted_delivery(delivery_to):
    delivery = delivery_to("http://127.0.0.1:9/")
    delivery.channel.delete()
    assert notification_deliver_task.apply(args=[delivery.pk]).state == states.SUCCESS


@pytest.fixture
def always_eager():
    conf = notification_deliver_task.app.conf
    previous, conf.task_always_eager = conf.task_always_eager, True
    yield
    conf.task_always_eager = previous


def test_alerts_are_delivered_end_to_end_with_eager_tasks(
    alert_for, receiver, always_eager, django_capture_on_commit_callbacks
):
    receiver.fail_first = 1
    team = TenantFactory()
    NotificationChannelFactory(tenant=team, target=receiver.url)

    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notification_deliveries_create(alert=alert_for(team))

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 2)


def test_the_retry_pending_task_calls_the_service(monkeypatch):
    monkeypatch.setattr("budgets.tasks.notification_deliveries_retry_pending", lambda: 3)
    assert notification_deliveries_retry_pending_task.apply().get() == 3


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_sends_a_queued_delivery(receiver, delivery_to):
    delivery = delivery_to(receiver.url)
    with celery_worker() as (queue, lines):
        notification_deliver_task.apply_async(args=[delivery.pk], queue=queue)
        wait_for(lambda: NotificationDelivery.objects.get(pk=delivery.pk).status == "sent", lines=lines)
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.response_code, len(receiver.requests)) == (1, 200, 1)
