from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    """Server-rendered pages for people: overview, tenant drill-down, budgets, statements."""

    name = "dashboards"
    verbose_name = "Dashboards"
