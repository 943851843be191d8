from django.core.management.base import BaseCommand, CommandError

from insights.services import DetectionSummary, anomalies_detect_all, anomalies_detect_tenant
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Run anomaly detection now (what Celery beat runs hourly): every active tenant, or --tenant SLUG."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", action="append", help="Only this tenant slug (repeatable).")

    def handle(self, *args, tenant, **options):
        if tenant:
            summary = DetectionSummary()
            for slug in tenant:
                found = Tenant.objects.filter(slug=slug).first()
                if found is None:
                    raise CommandError(f"No tenant with slug {slug!r}.")
                summary.add(anomalies_detect_tenant(tenant_id=found.pk))
        else:
            summary = anomalies_detect_all()
        self.stdout.write(
            f"{summary.series} series checked: {len(summary.opened)} anomalies opened, "
            f"{len(summary.extended)} extended, {len(summary.resolved)} resolved."
        )
