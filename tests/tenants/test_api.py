import pytest

from tenants.services import api_key_revoke
from tests.factories import ApiKeyFactory, TenantFactory
from tests.openapi import assert_conforms_to_schema

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree():
    org = TenantFactory(slug="org", kind="organization")
    team = TenantFactory(slug="team", parent=org)
    project = TenantFactory(slug="project", parent=team, kind="project")
    sibling = TenantFactory(slug="sibling", parent=org)
    other_org = TenantFactory(slug="other-org", kind="organization")
    return {"org": org, "team": team, "project": project, "sibling": sibling, "other": other_org}


def _slugs(response):
    return sorted(tenant["slug"] for tenant in response.json()["results"])


def test_a_tenant_key_sees_its_tenant_and_descendants_only(client_for, tree):
    response = client_for(tree["team"], scopes=["read"]).get("/api/v1/tenants/")
    assert response.status_code == 200
    assert _slugs(response) == ["project", "team"]


def test_a_global_key_sees_every_tenant(client_for, tree):
    response = client_for(None, scopes=["read"]).get("/api/v1/tenants/")
    assert _slugs(response) == ["org", "other-org", "project", "sibling", "team"]


@pytest.mark.parametrize("outside", ["org", "sibling", "other-org"])
def test_a_tenant_key_gets_404_for_parent_sibling_and_other_tenants(client_for, tree, outside):
    client = client_for(tree["team"], scopes=["read"])
    response = client.get(f"/api/v1/tenants/{outside}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/tenants/project/").status_code == 200


def test_tenant_filters(client_for, tree):
    client = client_for(None, scopes=["read"])
    assert _slugs(client.get("/api/v1/tenants/?parent=org")) == ["sibling", "team"]
    assert _slugs(client.get("/api/v1/tenants/?within=team")) == ["project", "team"]
    assert _slugs(client.get("/api/v1/tenants/?kind=organization")) == ["org", "other-org"]
    assert _slugs(client.get("/api/v1/tenants/?search=sib")) == ["sibling"]


def test_filters_cannot_widen_a_tenant_keys_scope(client_for, tree):
    client = client_for(tree["team"], scopes=["read"])
    assert _slugs(client.get("/api/v1/tenants/?within=org")) == ["project", "team"]
    assert _slugs(client.get("/api/v1/tenants/?parent=org")) == ["team"]


def test_read_scope_is_required(client_for, tree):
    response = client_for(tree["team"], scopes=["ingest"]).get("/api/v1/tenants/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_missing"


def test_admin_scope_implies_read(client_for, tree):
    assert client_for(tree["team"], scopes=["admin"]).get("/api/v1/tenants/").status_code == 200


def test_revoked_and_unknown_keys_are_refused(api_client, tree):
    api_key, secret = ApiKeyFactory.create_with_secret(tenant=tree["team"], scopes=["read"])
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api_client.get("/api/v1/tenants/").status_code == 200
    api_key_revoke(api_key=api_key)
    response = api_client.get("/api/v1/tenants/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret[:-1]}x")
    assert api_client.get("/api/v1/tenants/").status_code == 401


def test_a_key_of_a_deactivated_tenant_is_refused(client_for, tree):
    client = client_for(tree["team"], scopes=["read"])
    tree["team"].is_active = False
    tree["team"].save()
    assert client.get("/api/v1/tenants/").json()["error"]["code"] == "authentication_failed"


def test_key_use_is_recorded(client_for, tree):
    from tenants.models import ApiKey

    client_for(tree["team"], scopes=["read"]).get("/api/v1/tenants/")
    assert ApiKey.objects.get(tenant=tree["team"]).last_used_at is not None


def test_whoami_describes_the_calling_key(client_for, tree):
    body = client_for(tree["team"], scopes=["ingest"]).get("/api/v1/whoami/").json()
    assert (body["tenant"], body["scopes"]) == ("team", ["ingest"])
    assert body["prefix"].startswith("cbk_")
    assert client_for(None, scopes=["read"]).get("/api/v1/whoami/").json()["tenant"] is None


def test_a_tenant_without_billing_email_conforms_to_the_schema(client_for, tree):
    """Found by schema fuzzing: `billing_email` is empty unless set, which the schema described as
    an e-mail address."""
    client = client_for(tree["org"], scopes=["read"])
    assert_conforms_to_schema(client.get("/api/v1/tenants/"), "GET /api/v1/tenants/")
    detail = client.get("/api/v1/tenants/team/")
    assert detail.json()["billing_email"] == ""
    assert_conforms_to_schema(detail, "GET /api/v1/tenants/{slug}/")
