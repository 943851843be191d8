from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Budgets"

    def ready(self):
        from budgets.services import budgets_on_ingest
        from chargeback.hooks import post_ingest_hook_register

        post_ingest_hook_register(budgets_on_ingest)
