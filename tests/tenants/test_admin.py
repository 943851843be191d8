import re

import pytest
from django.contrib.auth.models import User

from tenants.models import ApiKey, Tenant
from tenants.services import api_key_hash
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser("admin", "admin@example.com", "a-long-password")
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/admin/tenants/tenant/",
        "/admin/tenants/tenant/add/",
        "/admin/tenants/apikey/",
        "/admin/tenants/apikey/add/",
        "/admin/chargeback/usagerecord/",
        "/admin/chargeback/usagerecord/?pricing_source__exact=unpriced",
        "/admin/chargeback/usagerolluphourly/",
        "/admin/chargeback/priceoverride/",
        "/admin/chargeback/priceoverride/add/",
        "/admin/chargeback/rerateaudit/",
    ],
)
def test_admin_pages_load(staff_client, url):
    TenantFactory(slug="team")
    assert staff_client.get(url).status_code == 200


def test_admin_pages_need_a_staff_login(client):
    response = client.get("/admin/tenants/tenant/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_creating_a_key_in_the_admin_shows_the_secret_once(staff_client):
    team = TenantFactory(slug="team")
    response = staff_client.post(
        "/admin/tenants/apikey/add/",
        {"name": "gateway", "tenant": team.pk, "scopes": ["ingest"]},
        follow=True,
    )
    secret = re.search(r"(cbk_[0-9a-f]{12}_[A-Za-z0-9_-]+)", response.content.decode()).group(1)
    api_key = ApiKey.objects.get()
    assert api_key.secret_hash == api_key_hash(secret)
    assert secret not in staff_client.get(f"/admin/tenants/apikey/{api_key.pk}/change/").content.decode()


def test_the_admin_refuses_a_tenant_loop(staff_client):
    root = TenantFactory(slug="root")
    child = TenantFactory(slug="child", parent=root)
    data = {"slug": "root", "name": "Root", "kind": "team", "parent": child.pk, "time_zone": "UTC",
            "billing_currency": "USD", "is_active": "on"}  # fmt: skip
    response = staff_client.post(f"/admin/tenants/tenant/{root.pk}/change/", data)
    assert response.status_code == 200
    assert "cannot loop" in response.content.decode()
    assert Tenant.objects.get(pk=root.pk).parent is None
