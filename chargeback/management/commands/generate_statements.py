import re

from django.core.management.base import BaseCommand, CommandError

from chargeback import money
from chargeback.services import statements_generate
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Generate (or regenerate) draft statements for a month for every billable tenant; --finalize issues them."

    def add_arguments(self, parser):
        parser.add_argument("--period", required=True, help="Month in each tenant's zone, YYYY-MM.")
        parser.add_argument("--tenant", action="append", help="Only this billable tenant (repeatable).")
        parser.add_argument(
            "--finalize", action="store_true", help="Finalize: number, freeze and store the PDF."
        )

    def handle(self, *args, period, tenant, finalize, **options):
        if not re.match(r"^\d{4}-(0[1-9]|1[0-2])$", period):
            raise CommandError("--period must be YYYY-MM.")
        tenant_ids = None
        if tenant:
            found = dict(Tenant.objects.filter(slug__in=tenant, is_billable=True).values_list("slug", "id"))
            missing = sorted(set(tenant) - set(found))
            if missing:
                raise CommandError(f"No billable tenant {', '.join(missing)}.")
            tenant_ids = list(found.values())
        statements = statements_generate(period_key=period, finalize=finalize, tenant_ids=tenant_ids)
        for statement in statements:
            self.stdout.write(
                f"{statement.tenant.slug:<24} {statement.status:<10} {statement.number or '-':<18} "
                f"{money.cents_to_str(statement.total_cents):>14} USD"
            )
        self.stdout.write(f"{len(statements)} statement(s) for {period}.")
