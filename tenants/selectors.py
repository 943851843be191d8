"""Reads for tenants and API keys."""

from django.db import connection

from tenants.models import ApiKey, Tenant

_DESCENDANTS_SQL = """
WITH RECURSIVE subtree(id) AS (
    SELECT id FROM {table} WHERE id IN ({placeholders})
    UNION
    SELECT child.id FROM {table} AS child JOIN subtree ON child.parent_id = subtree.id
)
SELECT id FROM subtree
"""

_ANCESTORS_SQL = """
WITH RECURSIVE chain(id, parent_id, depth) AS (
    SELECT id, parent_id, 0 FROM {table} WHERE id = %s
    UNION ALL
    SELECT parent.id, parent.parent_id, chain.depth + 1 FROM {table} AS parent
    JOIN chain ON parent.id = chain.parent_id
)
SELECT id FROM chain ORDER BY depth
"""


def tenant_descendant_ids(*tenant_ids: int) -> list[int]:
    """The given tenants and all tenants below them, at any depth, in one query."""
    if not tenant_ids:
        return []
    sql = _DESCENDANTS_SQL.format(
        table=Tenant._meta.db_table, placeholders=", ".join(["%s"] * len(tenant_ids))
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(tenant_ids))
        return [row[0] for row in cursor.fetchall()]


def tenant_ancestor_ids(tenant_id: int) -> list[int]:
    """The tenant itself, then its parent, up to the root, in one query."""
    with connection.cursor() as cursor:
        cursor.execute(_ANCESTORS_SQL.format(table=Tenant._meta.db_table), [tenant_id])
        return [row[0] for row in cursor.fetchall()]


def tenant_list(*, principal) -> "list[Tenant]":
    return Tenant.objects.visible_to(principal).select_related("parent")


def api_key_get_by_prefix(*, prefix: str) -> ApiKey | None:
    return ApiKey.objects.select_related("tenant").filter(prefix=prefix, is_active=True).first()


def tenant_slugs_writable(*, slugs: set[str], scope_tenant_ids: list[int] | None) -> set[str]:
    """Which of `slugs` are active tenants within `scope_tenant_ids` (None: any tenant)."""
    queryset = Tenant.objects.filter(slug__in=slugs, is_active=True)
    if scope_tenant_ids is not None:
        queryset = queryset.filter(id__in=scope_tenant_ids)
    return set(queryset.values_list("slug", flat=True))
