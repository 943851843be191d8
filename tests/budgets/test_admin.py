import pytest
from django.contrib.auth.models import User

from budgets.models import NotificationDelivery
from budgets.notifications import alert_payload
from tests.factories import NotificationChannelFactory, TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser("admin", "admin@example.com", "a-long-password")
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/admin/budgets/notificationchannel/",
        "/admin/budgets/notificationchannel/?kind__exact=webhook&is_active__exact=1",
        "/admin/budgets/notificationchannel/add/",
        "/admin/budgets/notificationdelivery/",
        "/admin/budgets/notificationdelivery/?status__exact=failed&channel__kind__exact=email",
    ],
)
def test_admin_pages_load(staff_client, alert_for, url):
    team = TenantFactory(slug="team")
    alert = alert_for(team)
    channel = NotificationChannelFactory(tenant=team)
    NotificationDelivery.objects.create(channel=channel, alert=alert, payload=alert_payload(alert))
    assert staff_client.get(url).status_code == 200


def test_delivery_admin_is_read_only(staff_client):
    delivery = NotificationDelivery.objects.create(
        channel=NotificationChannelFactory(), payload={"type": "test"}
    )
    assert staff_client.get(f"/admin/budgets/notificationdelivery/{delivery.pk}/change/").status_code == 200
    assert staff_client.get("/admin/budgets/notificationdelivery/add/").status_code == 403
    assert staff_client.get(f"/admin/budgets/notificationdelivery/{delivery.pk}/delete/").status_code == 403


def test_the_send_test_action_sends_one_request_per_channel(staff_client, receiver):
    working = NotificationChannelFactory(name="working", target=receiver.url)
    broken = NotificationChannelFactory(name="broken", target="http://127.0.0.1:9/")
    response = staff_client.post(
        "/admin/budgets/notificationchannel/",
        {"action": "send_test", "_selected_action": [working.pk, broken.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert len(receiver.requests) == 1
    messages = [str(message) for message in response.context["messages"]]
    assert "working (webhook): test notification sent (HTTP 200)." in messages
    assert any(
        message.startswith("broken (webhook): test notification failed: URLError") for message in messages
    )
    assert NotificationDelivery.objects.filter(alert=None).count() == 2


def test_the_budget_admin_lists_spend_and_saves_thresholds(client, django_user_model):
    from budgets.models import Budget
    from tests.budgets.test_services import NOW, ingest
    from tests.factories import BudgetFactory, TenantFactory

    team = TenantFactory(slug="team")
    BudgetFactory(tenant=team, name="Team monthly", amount_nanos=10 * 10**9)
    ingest("team", "2.5", at=NOW)
    client.force_login(
        django_user_model.objects.create_superuser("root", "root@example.com", "pw-long-enough")
    )
    page = client.get("/admin/budgets/budget/").content.decode()
    assert "Team monthly" in page
    assert "2.500000000" in page and "25.0%" in page
    response = client.post(
        "/admin/budgets/budget/add/",
        {
            "tenant": team.pk, "name": "Daily cap", "amount_usd": "12.50", "period": "day", "week_start": 0,
            "action": "block", "fail_mode": "open", "is_active": "on",
            "thresholds-TOTAL_FORMS": 1, "thresholds-INITIAL_FORMS": 0, "thresholds-0-percent": "90",
            "thresholds-0-on_actual": "on",
        },
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    budget = Budget.objects.get(name="Daily cap")
    assert budget.amount_nanos == 12_500_000_000
    assert [threshold.percent for threshold in budget.thresholds.all()] == [90]
    assert client.get(f"/admin/budgets/budget/{budget.pk}/change/").status_code == 200
    assert client.get("/admin/budgets/budgetalert/").status_code == 200
