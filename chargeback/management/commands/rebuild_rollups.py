from django.core.management.base import BaseCommand, CommandError

from chargeback.calendar import local_midnight
from chargeback.management.commands._dates import parse_date
from chargeback.services import usage_rollups_rebuild
from tenants.models import Tenant
from tenants.selectors import tenant_descendant_ids


class Command(BaseCommand):
    help = "Recompute hourly rollups from the raw usage records for [--from, --to) (UTC dates)."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", required=True, help="First UTC date, YYYY-MM-DD.")
        parser.add_argument(
            "--to", dest="end", required=True, help="Day after the last UTC date, YYYY-MM-DD."
        )
        parser.add_argument("--tenant", help="Only this tenant and its descendants.")

    def handle(self, *args, start, end, tenant, **options):
        start_at = local_midnight(parse_date(start), "UTC")
        end_at = local_midnight(parse_date(end), "UTC")
        if end_at <= start_at:
            raise CommandError("--to must be after --from.")
        tenant_ids = None
        if tenant:
            root = Tenant.objects.filter(slug=tenant).first()
            if root is None:
                raise CommandError(f"No tenant with slug {tenant!r}.")
            tenant_ids = tenant_descendant_ids(root.pk)
        count = usage_rollups_rebuild(tenant_ids=tenant_ids, start=start_at, end=end_at)
        self.stdout.write(f"Rebuilt rollups from {count:,} records.")
