from django.apps import AppConfig


class InsightsConfig(AppConfig):
    name = "insights"
    verbose_name = "Insights: anomalies, alert rules, forecasts"

    def ready(self):
        from budgets.selectors import budget_forecaster_register
        from insights.services import insights_budget_forecaster

        # Budgets must not import insights (dependency direction): they ask the forecaster
        # registered here, and keep their run rate while none is.
        budget_forecaster_register(insights_budget_forecaster)
