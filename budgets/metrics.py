"""Budget metrics for /metrics, registered into chargeback's collector from BudgetsConfig.ready()."""

from collections.abc import Iterable

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from budgets.models import Budget
from budgets.selectors import budget_status

NANOS_PER_USD = 10**9
# Budgets are defined by people, so their ids and names are a bounded label set.
BUDGET_LABELS = ["budget", "budget_id", "tenant"]


def budget_metric_families() -> Iterable[Metric]:
    """Spend, amount and utilisation of every active budget in its current period."""
    now = timezone.now()
    utilisation = GaugeMetricFamily(
        "llm_budget_utilisation_ratio",
        "Spend in the budget's current period divided by its amount (1 = the whole budget).",
        labels=BUDGET_LABELS,
    )
    spend = GaugeMetricFamily(
        "llm_budget_spend_usd", "Spend in the budget's current period, in USD.", labels=BUDGET_LABELS
    )
    amount = GaugeMetricFamily(
        "llm_budget_amount_usd", "The budget's amount per period, in USD.", labels=BUDGET_LABELS
    )
    budgets = Budget.objects.filter(is_active=True).select_related("tenant").prefetch_related("thresholds")
    for budget in budgets.order_by("tenant__slug", "name", "id"):
        status = budget_status(budget, now)
        labels = [budget.name, str(budget.pk), budget.tenant.slug]
        utilisation.add_metric(labels, status["spent_nanos"] / budget.amount_nanos)
        spend.add_metric(labels, status["spent_nanos"] / NANOS_PER_USD)
        amount.add_metric(labels, budget.amount_nanos / NANOS_PER_USD)
    return [utilisation, spend, amount]
