from django.core.management.base import BaseCommand, CommandError

from chargeback import money
from chargeback.calendar import local_midnight
from chargeback.management.commands._dates import parse_date
from chargeback.services import StatementError, usage_records_rerate
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Re-price a tenant's (and its descendants') usage in [--from, --to), dates in the tenant's time zone, "
        "with the current price book. Writes an audit entry with the totals before and after."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--from", dest="start", required=True, help="First local date, YYYY-MM-DD.")
        parser.add_argument(
            "--to", dest="end", required=True, help="Day after the last local date, YYYY-MM-DD."
        )
        parser.add_argument(
            "--actor", default="manage.py rerate", help="Who asked for it, for the audit log."
        )

    def handle(self, *args, tenant, start, end, actor, **options):
        tenant_obj = Tenant.objects.filter(slug=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"No tenant with slug {tenant!r}.")
        start_at = local_midnight(parse_date(start), tenant_obj.time_zone)
        end_at = local_midnight(parse_date(end), tenant_obj.time_zone)
        if end_at <= start_at:
            raise CommandError("--to must be after --from.")
        try:
            audit = usage_records_rerate(tenant=tenant_obj, start=start_at, end=end_at, actor=actor)
        except StatementError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"Re-rated {audit.records:,} records: {money.nanos_to_str(audit.cost_nanos_before)} USD -> "
            f"{money.nanos_to_str(audit.cost_nanos_after)} USD (audit #{audit.pk})."
        )
