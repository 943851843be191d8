"""Writes for budgets: definitions, evaluation (alerts that fire once), counters."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from budgets.counters import (
    CountersUnavailable,
    counter_key,
    counters_add,
    counters_enabled,
    counters_mark_reconciled,
    counters_set,
)
from budgets.models import Budget, BudgetAlert, BudgetThreshold
from budgets.notifications import notification_deliveries_create
from budgets.periods import Period, budget_period
from budgets.selectors import (
    budget_current_period,
    budget_definitions_forget,
    budget_forecast,
    budget_matches,
    budget_spend,
    threshold_limit_nanos,
)
from chargeback.hooks import IngestedRecord

logger = logging.getLogger(__name__)
# Counters outlive their period a little, for late records and for the status of the last period.
COUNTER_GRACE = timedelta(days=35)


@transaction.atomic
def budget_save(*, budget: Budget, thresholds: Iterable[dict] | None = None) -> Budget:
    """Validate and save a budget, replacing its thresholds when given."""
    budget.full_clean()
    budget.save()
    if thresholds is not None:
        budget.thresholds.all().delete()
        BudgetThreshold.objects.bulk_create(
            BudgetThreshold(budget=budget, **threshold) for threshold in thresholds
        )
    budget_definitions_forget()
    return budget


def budget_delete(*, budget: Budget) -> None:
    budget.delete()
    budget_definitions_forget()


def budget_evaluate(*, budget_id: int, now: datetime | None = None) -> list[BudgetAlert]:
    """Compare the budget's spend (and forecast) in the current period with its thresholds and
    record each newly crossed one as an alert, with its notifications. Safe to run concurrently:
    the (budget, period, threshold, kind) constraint lets only one evaluation record an alert."""
    now = now or timezone.now()
    budget = (
        Budget.objects.select_related("tenant").prefetch_related("thresholds").filter(pk=budget_id).first()
    )
    if budget is None or not budget.is_active:
        return []
    period = budget_current_period(budget, now)
    spent = budget_spend(budget, period)
    forecast = budget_forecast(spent, period, now, budget)
    created = []
    for threshold in budget.thresholds.all():
        limit = threshold_limit_nanos(budget.amount_nanos, threshold.percent)
        crossed = []
        if threshold.on_actual and spent >= limit:
            crossed.append(BudgetAlert.Kind.ACTUAL)
        if threshold.on_forecast and forecast is not None and forecast >= limit:
            crossed.append(BudgetAlert.Kind.FORECAST)
        for kind in crossed:
            alert = _alert_create(budget, threshold, period, kind, spent, forecast)
            if alert is not None:
                created.append(alert)
    return created


def _alert_create(budget, threshold, period: Period, kind: str, spent: int, forecast: int | None):
    try:
        with transaction.atomic():
            alert = BudgetAlert.objects.create(
                budget=budget,
                threshold=threshold,
                period_key=period.key,
                kind=kind,
                spent_nanos=spent,
                forecast_nanos=forecast,
                amount_nanos=budget.amount_nanos,
                period_start=period.start,
                period_end=period.end,
            )
            notification_deliveries_create(alert=alert)
    except IntegrityError:
        return None  # another evaluation recorded this crossing first
    return alert


def budgets_evaluate_all(*, now: datetime | None = None) -> int:
    """Evaluate every active budget; returns the number of new alerts."""
    now = now or timezone.now()
    return sum(
        len(budget_evaluate(budget_id=budget_id, now=now))
        for budget_id in Budget.objects.filter(is_active=True).values_list("id", flat=True)
    )


def budget_counters_reconcile(*, now: datetime | None = None) -> int:
    """Set every active budget's current-period counter to the spend in the database."""
    if not counters_enabled():
        return 0
    now = now or timezone.now()
    values, expire_at = {}, {}
    for budget in Budget.objects.filter(is_active=True).select_related("tenant"):
        period = budget_current_period(budget, now)
        key = counter_key(budget.pk, period.key)
        values[key] = budget_spend(budget, period)
        expire_at[key] = int((period.end + COUNTER_GRACE).timestamp())
    counters_set(values, expire_at)
    counters_mark_reconciled(ttl_seconds=3 * settings.BUDGET_EVALUATION_INTERVAL_SECONDS)
    return len(values)


def budgets_on_ingest(records: list[IngestedRecord], tenant_chains: dict[int, list[int]]) -> None:
    """Post-ingest hook: add the new records' cost to the counters of every budget they count
    toward, and schedule a debounced evaluation of those budgets."""
    chain_ids = {tenant_id for chain in tenant_chains.values() for tenant_id in chain}
    by_tenant: dict[int, list[Budget]] = {}
    for budget in Budget.objects.filter(tenant_id__in=chain_ids, is_active=True).select_related("tenant"):
        by_tenant.setdefault(budget.tenant_id, []).append(budget)
    if not by_tenant:
        return
    deltas: dict[str, int] = {}
    expire_at: dict[str, int] = {}
    touched: set[int] = set()
    for record in records:
        for ancestor in tenant_chains.get(record.tenant_id, [record.tenant_id]):
            for budget in by_tenant.get(ancestor, ()):
                if not budget_matches(
                    budget, provider=record.provider, model_id=record.model_id, tags=record.tags
                ):
                    continue
                period = budget_period(budget, record.occurred_at, budget.tenant.time_zone)
                if not period.contains(record.occurred_at):
                    continue
                touched.add(budget.pk)
                if record.cost_nanos:
                    key = counter_key(budget.pk, period.key)
                    deltas[key] = deltas.get(key, 0) + record.cost_nanos
                    expire_at[key] = int((period.end + COUNTER_GRACE).timestamp())
    if deltas and counters_enabled():
        try:
            counters_add(deltas, expire_at)
        except CountersUnavailable as error:
            logger.warning("budget counters not updated (%s); the next reconciliation repairs them", error)
    budgets_schedule_evaluation(budget_ids=sorted(touched))


def budgets_schedule_evaluation(*, budget_ids: list[int]) -> None:
    """Queue an evaluation of these budgets a few seconds from now, at most one pending per budget."""
    from budgets.tasks import budgets_evaluate_task  # tasks import services; import here to avoid a cycle

    debounce = settings.BUDGET_EVALUATION_DEBOUNCE_SECONDS
    pending = [
        budget_id for budget_id in budget_ids if cache.add(_pending_key(budget_id), 1, timeout=debounce * 10)
    ]
    if not pending:
        return
    try:
        budgets_evaluate_task.apply_async(args=[pending], countdown=debounce)
    except Exception as error:  # the broker is down: beat's periodic evaluation catches up
        logger.warning("could not queue a budget evaluation (%s)", error)
        cache.delete_many([_pending_key(budget_id) for budget_id in pending])


def budgets_evaluation_started(*, budget_ids: list[int]) -> None:
    """Clear the pending marks, so that records arriving from now on queue a new evaluation."""
    cache.delete_many([_pending_key(budget_id) for budget_id in budget_ids])


def _pending_key(budget_id: int) -> str:
    return f"budget-evaluation-pending:{budget_id}"
