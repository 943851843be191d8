from django.core.management.base import BaseCommand

from insights.services import anomaly_digests_send


class Command(BaseCommand):
    help = "Send the daily anomaly digests now (what Celery beat runs once a day)."

    def handle(self, *args, **options):
        self.stdout.write(f"{anomaly_digests_send()} digest(s) sent.")
