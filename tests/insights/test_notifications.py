import pytest

from budgets.models import NotificationDelivery
from budgets.notifications import _summary, notification_deliver, notification_deliveries_create_keyed
from tests.factories import NotificationChannelFactory, TenantFactory

pytestmark = pytest.mark.django_db


def test_keyed_deliveries_are_created_once_per_channel_and_key(django_capture_on_commit_callbacks):
    organisation = TenantFactory(slug="org")
    team = TenantFactory(slug="team", parent=organisation)
    NotificationChannelFactory(tenant=organisation)
    NotificationChannelFactory(tenant=organisation, kind="email", target="oncall@example.com")
    payload = {"type": "anomaly.detected", "summary": "Cost anomaly on team", "details": ["feature search"]}
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = notification_deliveries_create_keyed(
            tenant=team, dedupe_key="anomaly:1:subscription:1", payload=payload
        )
        again = notification_deliveries_create_keyed(
            tenant=team, dedupe_key="anomaly:1:subscription:1", payload=payload
        )
    assert len(first) == 2 and [delivery.pk for delivery in again] == [delivery.pk for delivery in first]
    assert len(callbacks) == 2  # only new deliveries are sent
    assert NotificationDelivery.objects.filter(alert__isnull=True).count() == 2
    with pytest.raises(ValueError):
        notification_deliveries_create_keyed(tenant=team, dedupe_key="", payload=payload)


def test_other_apps_payloads_bring_their_own_text():
    summary, details = _summary(
        {"type": "alert_rule.fired", "summary": "Alert: team / slow", "details": ["p95 > 2 s"]}
    )
    assert (summary, details) == ("Alert: team / slow", ["p95 > 2 s"])


def test_a_keyed_delivery_to_an_inactive_channel_fails_without_sending(django_capture_on_commit_callbacks):
    tenant = TenantFactory()
    channel = NotificationChannelFactory(tenant=tenant)
    with django_capture_on_commit_callbacks(execute=False):
        [delivery] = notification_deliveries_create_keyed(
            tenant=tenant, dedupe_key="digest:1:x", payload={"summary": "x"}
        )
    channel.is_active = False
    channel.save()
    delivery = notification_deliver(delivery_id=delivery.pk)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 0, "channel is inactive")
