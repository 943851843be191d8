"""On PostgreSQL, extended statistics on the rollups' (tenant, provider, model): without them the
planner multiplies the columns' distinct counts, expects ten times too many groups for a month of
statements or a cost breakdown, and sorts millions of rollup rows where a hash aggregate does
(bench/statements.py: the usage query of 1,000 statements about a quarter faster)."""

from django.db import migrations

CREATE = (
    "CREATE STATISTICS IF NOT EXISTS chargeback_rollup_groups_stats (ndistinct)"
    " ON tenant_id, provider, model FROM chargeback_usagerolluphourly"
)
DROP = "DROP STATISTICS IF EXISTS chargeback_rollup_groups_stats"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("chargeback", "0003_statement_immutability_trigger")]

    operations = [migrations.RunPython(create, drop)]
