from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tenants.models import ApiKey
from tenants.services import api_key_hash
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_the_secret_once_and_stores_its_hash(api_client):
    team = TenantFactory(slug="team")
    out = StringIO()
    call_command(
        "create_api_key", "--tenant", "team", "--scopes", "ingest,read", stdout=out, stderr=StringIO()
    )
    secret = out.getvalue().strip()
    api_key = ApiKey.objects.get()
    assert (api_key.tenant, sorted(api_key.scopes)) == (team, ["ingest", "read"])
    assert api_key.secret_hash == api_key_hash(secret)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api_client.get("/api/v1/tenants/").status_code == 200


def test_create_api_key_refuses_unknown_tenants_and_scopes():
    with pytest.raises(CommandError):
        call_command("create_api_key", "--tenant", "ghost", "--scopes", "read", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("create_api_key", "--scopes", "read,write", stdout=StringIO())
    assert not ApiKey.objects.exists()
