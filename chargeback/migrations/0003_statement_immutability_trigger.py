"""On PostgreSQL, the database itself refuses to change or delete a finalized statement or its
lines; the only change allowed is finalized -> void (which keeps number and document)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION chargeback_statement_immutable() RETURNS trigger AS $$
BEGIN
    IF OLD.status = 'draft' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status = 'finalized' AND NEW.status = 'void'
       AND NEW.number IS NOT DISTINCT FROM OLD.number
       AND NEW.total_cents = OLD.total_cents
       AND NEW.pdf_sha256 = OLD.pdf_sha256
       AND NEW.pdf IS NOT DISTINCT FROM OLD.pdf
       AND NEW.tenant_id = OLD.tenant_id
       AND NEW.period_key = OLD.period_key THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'statement % is % and cannot be changed', OLD.id, OLD.status
        USING ERRCODE = 'check_violation';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION chargeback_statement_line_immutable() RETURNS trigger AS $$
DECLARE
    parent_status text;
BEGIN
    SELECT status INTO parent_status FROM chargeback_statement WHERE id = OLD.statement_id;
    IF parent_status IS NOT NULL AND parent_status <> 'draft' THEN
        RAISE EXCEPTION 'lines of statement % (%) cannot be changed', OLD.statement_id, parent_status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER chargeback_statement_immutable BEFORE UPDATE OR DELETE ON chargeback_statement
    FOR EACH ROW EXECUTE FUNCTION chargeback_statement_immutable();
CREATE TRIGGER chargeback_statement_line_immutable BEFORE UPDATE OR DELETE ON chargeback_statementline
    FOR EACH ROW EXECUTE FUNCTION chargeback_statement_line_immutable();
"""

DROP = """
DROP TRIGGER IF EXISTS chargeback_statement_line_immutable ON chargeback_statementline;
DROP TRIGGER IF EXISTS chargeback_statement_immutable ON chargeback_statement;
DROP FUNCTION IF EXISTS chargeback_statement_line_immutable();
DROP FUNCTION IF EXISTS chargeback_statement_immutable();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)  # no %-placeholders: the SQL has literal %


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("chargeback", "0002_statements_and_allocation")]

    operations = [migrations.RunPython(create, drop)]
