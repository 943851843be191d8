from django.core.management.base import BaseCommand, CommandError

from insights.weekly_review_services import weekly_review_send, weekly_reviews_send_all
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Send the weekly cost reviews of the last complete week now (what Celery beat runs every Monday): "
        "to every tenant with notification channels of its own, or to one tenant. A week already sent is "
        "not sent again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="Only this tenant (slug): its subtree's review to its channels.")

    def handle(self, *args, tenant: str | None = None, **options):
        if tenant:
            found = Tenant.objects.filter(slug=tenant).first()
            if found is None:
                raise CommandError(f"No tenant {tenant!r}.")
            deliveries = weekly_review_send(tenant=found)
            self.stdout.write(f"Weekly review of {found.slug}: {len(deliveries)} delivery(ies).")
            return
        self.stdout.write(f"{weekly_reviews_send_all()} weekly review(s) sent.")
