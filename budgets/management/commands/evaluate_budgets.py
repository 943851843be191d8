from django.core.management.base import BaseCommand

from budgets.services import budget_counters_reconcile, budget_evaluate, budgets_evaluate_all


class Command(BaseCommand):
    help = "Evaluate budgets now (all active ones, or --budget ID) and reconcile the Redis counters."

    def add_arguments(self, parser):
        parser.add_argument("--budget", type=int, action="append", help="Only this budget id (repeatable).")

    def handle(self, *args, budget, **options):
        if budget:
            alerts = sum(len(budget_evaluate(budget_id=budget_id)) for budget_id in budget)
        else:
            alerts = budgets_evaluate_all()
        reconciled = budget_counters_reconcile()
        self.stdout.write(f"{alerts} new alert(s); {reconciled} counter(s) reconciled.")
