import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tenants.selectors import tenant_ancestor_ids, tenant_descendant_ids
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def _chain(depth):
    tenants = [TenantFactory(slug="level-0")]
    for level in range(1, depth):
        tenants.append(TenantFactory(slug=f"level-{level}", parent=tenants[-1]))
    return tenants


def test_descendants_of_a_deep_tree_in_one_query():
    chain = _chain(12)
    side = TenantFactory(slug="side", parent=chain[5])
    unrelated = TenantFactory(slug="unrelated")
    with CaptureQueriesContext(connection) as queries:
        ids = tenant_descendant_ids(chain[3].pk)
    assert len(queries) == 1
    assert set(ids) == {tenant.pk for tenant in chain[3:]} | {side.pk}
    assert unrelated.pk not in ids


def test_ancestors_run_from_self_to_root():
    chain = _chain(6)
    assert tenant_ancestor_ids(chain[4].pk) == [tenant.pk for tenant in reversed(chain[:5])]


def test_descendants_of_several_roots_and_of_none():
    first, second = TenantFactory(), TenantFactory()
    child = TenantFactory(parent=second)
    assert set(tenant_descendant_ids(first.pk, second.pk)) == {first.pk, second.pk, child.pk}
    assert tenant_descendant_ids() == []
