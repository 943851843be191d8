from django.core.management.base import BaseCommand

from insights.services import alert_rules_evaluate_all


class Command(BaseCommand):
    help = "Evaluate every active static alert rule now (what Celery beat runs every few minutes)."

    def handle(self, *args, **options):
        changed = alert_rules_evaluate_all()
        self.stdout.write(f"{changed} alert rule event(s) fired or resolved.")
