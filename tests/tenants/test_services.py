import pytest
from django.core.exceptions import ValidationError

from tenants.models import ApiKey
from tenants.services import api_key_create, api_key_hash, tenant_create, tenant_save
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def test_api_key_is_stored_as_a_hash_with_a_visible_prefix():
    api_key, secret = api_key_create(name="ci", scopes=["ingest"])
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert secret.startswith(stored.prefix + "_")
    assert stored.secret_hash == api_key_hash(secret)
    # The secret itself is nowhere in the row.
    assert all(secret not in str(value) for value in vars(stored).values())


def test_each_key_secret_is_unique_and_only_returned_at_creation():
    first, first_secret = api_key_create(name="a", scopes=["read"])
    second, second_secret = api_key_create(name="b", scopes=["read"])
    assert first_secret != second_secret
    assert first.prefix != second.prefix
    assert not hasattr(ApiKey.objects.get(pk=first.pk), "secret")


def test_api_key_scopes_must_be_known_and_non_empty():
    with pytest.raises(ValidationError):
        api_key_create(name="bad", scopes=["write"])
    with pytest.raises(ValidationError):
        api_key_create(name="none", scopes=[])


def test_tenant_cannot_become_its_own_descendant():
    root = tenant_create(slug="root", name="Root")
    child = tenant_create(slug="child", name="Child", parent=root)
    grandchild = tenant_create(slug="grandchild", name="Grandchild", parent=child)
    root.parent = grandchild
    with pytest.raises(ValidationError) as error:
        tenant_save(tenant=root)
    assert "loop" in str(error.value)


def test_tenant_time_zone_must_be_iana():
    with pytest.raises(ValidationError):
        tenant_create(slug="tz", name="Tz", time_zone="Mars/Olympus")
    assert (
        tenant_create(slug="tz-ok", name="Tz", time_zone="America/New_York").time_zone == "America/New_York"
    )


def test_factory_tenants_are_active_by_default():
    assert TenantFactory().is_active
