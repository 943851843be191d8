from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Budgets"

    def ready(self):
        from budgets.services import budgets_on_ingest
        from chargeback.hooks import post_ingest_hook_register

        post_ingest_hook_register(budgets_on_ingest)

        from budgets.metrics import budget_metric_families
        from chargeback.metrics import metric_families_register

        metric_families_register(budget_metric_families)

        from budgets.demo import seed_routing_demo
        from chargeback.demo import demo_seed_step_register

        demo_seed_step_register(seed_routing_demo)
