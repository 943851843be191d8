import pytest
from django.contrib.auth.models import User

from audit.models import AuditEvent
from tests.factories import ApiKeyFactory, TenantFactory

pytestmark = pytest.mark.django_db


def test_the_audit_log_is_read_only_in_the_admin(client):
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "a-long-password"))
    ApiKeyFactory(tenant=TenantFactory(slug="team"), name="gateway")
    event = AuditEvent.objects.get(action="api_key.create")
    listing = client.get("/admin/audit/auditevent/?action=api_key.create&actor_type=system")
    assert listing.status_code == 200 and "gateway" in listing.content.decode()
    detail = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert detail.status_code == 200 and "&quot;name&quot;: &quot;gateway&quot;" in detail.content.decode()
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()
