from django.core.management.base import BaseCommand

from insights.services import forecasts_refresh_all


class Command(BaseCommand):
    help = "Recompute every active tenant's month-end and budget period-end forecasts now (beat: hourly)."

    def handle(self, *args, **options):
        self.stdout.write(f"{forecasts_refresh_all()} forecast(s) refreshed.")
