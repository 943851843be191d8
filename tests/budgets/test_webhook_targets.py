"""Webhook and Slack targets: allowed schemes and hosts, never an internal address unless configured
(checked on the address actually connected to, so DNS rebinding does not get through), validated
when a channel is saved, and a timeout on every request."""

import ipaddress
import socket

import pytest
from django.contrib.auth.models import User

from audit.models import AuditEvent
from budgets import webhook_targets
from budgets.models import NotificationChannel
from budgets.notifications import DeliveryAbandoned, DeliveryFailed, notification_deliver
from budgets.services import notification_channel_save
from budgets.webhook_targets import TargetNotAllowed, address_is_internal, target_url_check
from tests.factories import NotificationChannelFactory, TenantFactory

pytestmark = pytest.mark.django_db

INTERNAL = [
    "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
    "::ffff:169.254.169.254", "fd00:ec2::254",
]  # fmt: skip
PUBLIC = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"]


@pytest.fixture
def internal_targets_refused(settings):
    """The service's defaults (tests allow the loopback stub servers explicitly)."""
    settings.NOTIFICATION_ALLOWED_NETWORKS = []
    settings.NOTIFICATION_ALLOW_PRIVATE_NETWORKS = False
    settings.NOTIFICATION_ALLOWED_HOSTS = []


@pytest.fixture
def resolves_to(monkeypatch):
    """Make host names resolve to given addresses, as a DNS server under someone's control could."""
    answers: dict[str, list[str]] = {}
    real = webhook_targets._resolve

    def resolve(host, port):
        if host not in answers:
            return real(host, port)
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, port),
            )
            for address in answers[host]
        ]

    monkeypatch.setattr(webhook_targets, "_resolve", resolve)
    return answers


def _delivery(channel, alert):
    return channel.deliveries.create(alert=alert, payload={"type": "test"})


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses_are_internal(address):
    assert address_is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_not(address):
    assert not address_is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", INTERNAL)
def test_an_internal_ip_target_is_refused_by_default(internal_targets_refused, address):
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(TargetNotAllowed, match="internal"):
        target_url_check(f"http://{host}:8080/hook")


def test_a_delivery_to_an_internal_address_is_abandoned_and_nothing_is_sent(
    internal_targets_refused, alert_for, receiver
):
    team = TenantFactory()
    delivery = _delivery(NotificationChannelFactory(tenant=team, target=receiver.url), alert_for(team))
    with pytest.raises(DeliveryAbandoned):
        notification_deliver(delivery_id=delivery.pk, final_attempt=False)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 1)  # not retried: it cannot succeed
    assert "internal" in delivery.last_error
    assert receiver.requests == []


def test_a_name_that_resolves_inward_at_send_time_is_refused(
    internal_targets_refused, alert_for, receiver, resolves_to
):
    """DNS rebinding: public when the channel was saved, the metadata service or loopback when sent."""
    team = TenantFactory()
    port = receiver.url.split(":")[2].split("/")[0]
    resolves_to["hooks.example.test"] = ["93.184.215.14"]
    channel = NotificationChannel(
        tenant=team, name="hook", kind="webhook", target=f"http://hooks.example.test:{port}/hook"
    )
    notification_channel_save(channel=channel)  # public now: accepted
    for answer in (["127.0.0.1"], ["93.184.215.14", "127.0.0.1"]):  # inward, or a mix of both
        resolves_to["hooks.example.test"] = answer
        delivery = _delivery(channel, alert_for(team))
        with pytest.raises(DeliveryAbandoned):
            notification_deliver(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == "failed" and "127.0.0.1 is internal" in delivery.last_error
    assert receiver.requests == []


def test_the_connection_goes_to_the_address_that_was_checked(alert_for, receiver, resolves_to):
    """With loopback allowed (as in these tests), a name resolving to the stub server reaches it,
    with the name in the Host header: the checked address is the one connected to."""
    team = TenantFactory()
    port = receiver.url.split(":")[2].split("/")[0]
    resolves_to["hooks.example.test"] = ["127.0.0.1"]
    channel = NotificationChannelFactory(tenant=team, target=f"http://hooks.example.test:{port}/hook")
    delivery = notification_deliver(delivery_id=_delivery(channel, alert_for(team)).pk)
    assert delivery.status == "sent"
    assert receiver.requests[0].headers["Host"] == f"hooks.example.test:{port}"


def test_allowed_networks_and_the_private_switch_let_internal_targets_through(
    internal_targets_refused, settings, alert_for, receiver
):
    team = TenantFactory()
    channel = NotificationChannelFactory(tenant=team, target=receiver.url)
    settings.NOTIFICATION_ALLOWED_NETWORKS = ["10.0.0.0/8", "127.0.0.1"]
    assert notification_deliver(delivery_id=_delivery(channel, alert_for(team)).pk).status == "sent"
    settings.NOTIFICATION_ALLOWED_NETWORKS = []
    settings.NOTIFICATION_ALLOW_PRIVATE_NETWORKS = True
    assert notification_deliver(delivery_id=_delivery(channel, alert_for(team)).pk).status == "sent"
    assert len(receiver.requests) == 2


def test_allowed_hosts_and_schemes_restrict_targets(settings, alert_for, receiver):
    team = TenantFactory()
    channel = NotificationChannelFactory(tenant=team, target=receiver.url)
    settings.NOTIFICATION_ALLOWED_HOSTS = ["hooks.slack.com", ".example.com"]
    with pytest.raises(TargetNotAllowed, match="NOTIFICATION_ALLOWED_HOSTS"):
        target_url_check(receiver.url)
    target_url_check("https://hooks.slack.com/services/T/B/x")
    target_url_check("https://alerts.example.com/hook")
    with pytest.raises(DeliveryAbandoned):
        notification_deliver(delivery_id=_delivery(channel, alert_for(team)).pk)

    settings.NOTIFICATION_ALLOWED_HOSTS = []
    settings.NOTIFICATION_ALLOWED_SCHEMES = ["https"]
    with pytest.raises(TargetNotAllowed, match="allowed scheme"):
        target_url_check(receiver.url)
    assert receiver.requests == []


def test_through_a_proxy_the_target_is_checked_before_the_proxy_is_asked(
    internal_targets_refused, settings, monkeypatch, alert_for, receiver, resolves_to
):
    """An HTTP proxy from the environment (here the stub server plays it) receives requests for
    public targets, never for internal ones; the proxy itself is the operator's choice."""
    monkeypatch.setenv("http_proxy", receiver.url.rsplit("/", 1)[0])
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    resolves_to["inside.example.test"] = ["10.1.2.3"]
    resolves_to["outside.example.test"] = ["93.184.215.14"]
    team = TenantFactory()
    inside = NotificationChannelFactory(tenant=team, target="http://inside.example.test/hook")
    with pytest.raises(DeliveryAbandoned):
        notification_deliver(delivery_id=_delivery(inside, alert_for(team)).pk)
    assert receiver.requests == []
    outside = NotificationChannelFactory(tenant=team, target="http://outside.example.test/hook")
    assert notification_deliver(delivery_id=_delivery(outside, alert_for(team)).pk).status == "sent"
    assert [request.path for request in receiver.requests] == ["http://outside.example.test/hook"]


# Saving a channel


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8000/hook",
        "http://[::1]/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://metadata.example.test/hook",  # resolves to the metadata address
        "gopher://example.com/x",
        "file:///etc/passwd",
    ],
)
def test_the_api_refuses_a_channel_with_a_target_that_is_not_allowed(
    internal_targets_refused, client_for, resolves_to, target
):
    resolves_to["metadata.example.test"] = ["169.254.169.254"]
    team = TenantFactory(slug="team")
    client = client_for(team, scopes=["admin"])
    body = {"tenant": "team", "name": "hook", "kind": "webhook", "target": target}
    response = client.post("/api/v1/notification-channels/", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "notification_target_not_allowed"
    assert "target" in error["details"]
    assert not NotificationChannel.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="notification_channel").exists()


def test_the_api_accepts_public_targets_and_checks_changes_too(internal_targets_refused, client_for):
    team = TenantFactory(slug="team")
    client = client_for(team, scopes=["admin"])
    body = {"tenant": "team", "name": "hook", "kind": "slack", "target": "https://93.184.215.14/services/x",
            "secret": "whsec-1"}  # fmt: skip
    created = client.post("/api/v1/notification-channels/", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["has_secret"] is True and "secret" not in created.json()
    changed = client.patch(
        f"/api/v1/notification-channels/{created.json()['id']}/",
        {"target": "http://10.0.0.8/"},
        format="json",
    )
    assert (changed.status_code, changed.json()["error"]["code"]) == (400, "notification_target_not_allowed")
    assert NotificationChannel.objects.get().target == "https://93.184.215.14/services/x"


def test_the_api_refuses_a_bad_email_target(client_for):
    client = client_for(TenantFactory(slug="team"), scopes=["admin"])
    body = {"tenant": "team", "name": "mail", "kind": "email", "target": "finops@example.com, not-an-address"}
    response = client.post("/api/v1/notification-channels/", body, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_email")


def test_channels_of_other_tenants_are_invisible_and_need_the_admin_scope(client_for):
    org = TenantFactory(slug="org")
    team = TenantFactory(slug="team", parent=org)
    sibling = TenantFactory(slug="sibling", parent=org)
    NotificationChannelFactory(tenant=team, name="team hook")
    theirs = NotificationChannelFactory(tenant=sibling, name="sibling hook")
    client = client_for(team, scopes=["admin"])
    assert [row["name"] for row in client.get("/api/v1/notification-channels/").json()["results"]] == [
        "team hook"
    ]
    assert client.get(f"/api/v1/notification-channels/{theirs.pk}/").status_code == 404
    assert client.delete(f"/api/v1/notification-channels/{theirs.pk}/").status_code == 404
    body = {"tenant": "sibling", "name": "x", "kind": "email", "target": "a@example.com"}
    assert client.post("/api/v1/notification-channels/", body, format="json").status_code == 400
    # Webhook URLs are credentials (Slack's above all): reading them needs the admin scope too.
    reader = client_for(team, scopes=["read"])
    assert reader.get("/api/v1/notification-channels/").json()["error"]["code"] == "scope_missing"


def test_the_admin_refuses_an_internal_target(internal_targets_refused, client):
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "a-long-password"))
    team = TenantFactory(slug="team")
    data = {"tenant": team.pk, "name": "hook", "kind": "webhook", "target": "http://169.254.169.254/", "secret": "",
            "is_active": "on"}  # fmt: skip
    response = client.post("/admin/budgets/notificationchannel/add/", data)
    assert response.status_code == 200
    assert "169.254.169.254 is internal" in response.content.decode()
    assert not NotificationChannel.objects.exists()


# Timeouts


def test_a_receiver_that_never_answers_times_out(settings, alert_for):
    """The connection is accepted (by the kernel's backlog) and then nothing: no status line ever."""
    settings.NOTIFICATION_HTTP_TIMEOUT_SECONDS = 0.5
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        team = TenantFactory()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        delivery = _delivery(NotificationChannelFactory(tenant=team, target=url), alert_for(team))
        with pytest.raises(DeliveryFailed):
            notification_deliver(delivery_id=delivery.pk, final_attempt=False)
    finally:
        silent.close()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == (
        "pending",
        1,
        None,
    )  # retried later
    assert "timed out" in delivery.last_error
