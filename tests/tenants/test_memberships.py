"""Tenant memberships: which tenants a signed-in person (not an API key) may see."""

import pytest
from django.contrib.auth.models import AnonymousUser

from tenants.models import TenantMembership
from tenants.scoping import visible_tenant_ids
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def tree():
    org = TenantFactory(slug="org")
    team = TenantFactory(slug="team", parent=org)
    project = TenantFactory(slug="project", parent=team)
    sibling = TenantFactory(slug="sibling", parent=org)
    other = TenantFactory(slug="other")
    return org, team, project, sibling, other


def test_staff_see_every_tenant(tree, django_user_model):
    assert visible_tenant_ids(django_user_model.objects.create_user("staff", is_staff=True)) is None


def test_a_member_sees_the_subtrees_of_their_memberships(tree, django_user_model):
    org, team, project, sibling, other = tree
    user = django_user_model.objects.create_user("member")
    TenantMembership.objects.create(user=user, tenant=team)
    TenantMembership.objects.create(user=user, tenant=other)
    assert sorted(visible_tenant_ids(django_user_model.objects.get(pk=user.pk))) == sorted(
        [team.pk, project.pk, other.pk]
    )
    assert org.pk not in visible_tenant_ids(user) and sibling.pk not in visible_tenant_ids(user)


@pytest.mark.parametrize("kind", ["no memberships", "inactive", "anonymous", "inactive staff", "not a user"])
def test_everyone_else_sees_nothing(tree, django_user_model, kind):
    if kind == "anonymous":
        principal = AnonymousUser()
    elif kind == "not a user":
        principal = object()
    else:
        principal = django_user_model.objects.create_user(
            "someone", is_active=kind == "no memberships", is_staff=kind == "inactive staff"
        )
        if kind == "inactive":
            TenantMembership.objects.create(user=principal, tenant=tree[0])
    assert visible_tenant_ids(principal) == []


def test_memberships_are_managed_in_the_admin(tree, django_user_model, client):
    admin = django_user_model.objects.create_superuser("root", password="x" * 12)
    TenantMembership.objects.create(user=admin, tenant=tree[1])
    client.force_login(admin)
    listing = client.get("/admin/tenants/tenantmembership/")
    assert listing.status_code == 200 and b"team" in listing.content
    assert client.get("/admin/tenants/tenantmembership/add/").status_code == 200
