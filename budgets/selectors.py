"""Reads for budgets: spend, status and the allowance check."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError

from budgets.counters import CountersUnavailable, counter_key, counters_enabled, counters_read
from budgets.models import Budget, NotificationChannel
from budgets.periods import Period, budget_period
from budgets.routing_selectors import RoutingChoice, routing_choose, routing_policies_for_tenant
from chargeback import money
from chargeback.selectors import usage_cost_between
from tenants.selectors import tenant_ancestor_ids, tenant_descendant_ids

logger = logging.getLogger(__name__)
# Forecasts need this share of the period behind them, or a run rate is mostly noise.
FORECAST_MIN_ELAPSED = 0.05


def budget_list(*, principal):
    return Budget.objects.visible_to(principal).select_related("tenant").prefetch_related("thresholds")


def notification_channel_list(*, principal):
    return NotificationChannel.objects.visible_to(principal).select_related("tenant")


def budget_matches(budget: Budget, *, provider: str, model_id: str, tags: dict[str, str]) -> bool:
    """Whether a call with these attributes counts toward the budget's narrowing."""
    if budget.provider and budget.provider != provider:
        return False
    if budget.model and budget.model != model_id:
        return False
    return not budget.tag_key or tags.get(budget.tag_key) == budget.tag_value


def budget_current_period(budget: Budget, now: datetime) -> Period:
    return budget_period(budget, now, budget.tenant.time_zone)


def budget_spend(budget: Budget, period: Period) -> int:
    """Charged spend (nanos) of the budget's tenant subtree in the period, from the database."""
    return usage_cost_between(
        tenant_ids=tenant_descendant_ids(budget.tenant_id),
        start=period.start,
        end=period.end,
        provider=budget.provider,
        model_id=budget.model,
        tag_key=budget.tag_key,
        tag_value=budget.tag_value,
    )


# The extension point for a better forecast than the run rate: an app above budgets (insights)
# registers one in its AppConfig.ready(). It gets (budget, period, spent so far, now) and returns
# the expected spend at period end in nanos, or None to fall back to the run rate.
BudgetForecaster = Callable[[Budget, Period, int, datetime], int | None]
_budget_forecasters: list[BudgetForecaster] = []


def budget_forecaster_register(forecaster: BudgetForecaster) -> None:
    """Use `forecaster` for budget forecasts from now on (the last registered wins)."""
    if forecaster in _budget_forecasters:
        _budget_forecasters.remove(forecaster)
    _budget_forecasters.append(forecaster)


def budget_forecaster_unregister(forecaster: BudgetForecaster) -> None:
    if forecaster in _budget_forecasters:
        _budget_forecasters.remove(forecaster)


def budget_forecast(
    spent_nanos: int, period: Period, now: datetime, budget: Budget | None = None
) -> int | None:
    """Spend at period end: from the registered forecaster when there is one and it has an
    answer for this budget, else at the period's run rate so far; None too early in the period."""
    if budget is not None and _budget_forecasters:
        try:
            forecast = _budget_forecasters[-1](budget, period, spent_nanos, now)
        except Exception:  # a failing forecaster must not stop budget evaluation
            logger.exception("budget forecaster failed for budget %s; using the run rate", budget.pk)
            forecast = None
        if forecast is not None:
            return forecast
    elapsed = period.elapsed_fraction(now)
    if elapsed < FORECAST_MIN_ELAPSED:
        return None
    return round(spent_nanos / elapsed)


def threshold_limit_nanos(amount_nanos: int, percent) -> int:
    return money.divide_half_even(amount_nanos * int(percent * 100), 10_000)


def budget_status(budget: Budget, now: datetime) -> dict:
    period = budget_current_period(budget, now)
    spent = budget_spend(budget, period)
    forecast = budget_forecast(spent, period, now, budget)
    alerts = {(alert.threshold_id, alert.kind) for alert in budget.alerts.filter(period_key=period.key)}
    return {
        "budget": budget,
        "period": period,
        "spent_nanos": spent,
        "remaining_nanos": budget.amount_nanos - spent,
        "forecast_nanos": forecast,
        "percent_used": spent * 100 / budget.amount_nanos,
        "thresholds": [
            {
                "threshold": threshold,
                "limit_nanos": threshold_limit_nanos(budget.amount_nanos, threshold.percent),
                "alerted_actual": (threshold.pk, "actual") in alerts,
                "alerted_forecast": (threshold.pk, "forecast") in alerts,
            }
            for threshold in budget.thresholds.all()
        ],
    }


# --- the allowance check -------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChainBudgets:
    expires: float
    budgets: list[Budget]


_chain_cache: dict[int, _ChainBudgets] = {}


def _budgets_for_tenant(tenant_id: int) -> list[Budget]:
    """Active budgets on the tenant and its ancestors, cached briefly per process: definitions
    change rarely, and the allowance check must not pay for them on every call."""
    cached = _chain_cache.get(tenant_id)
    if cached is not None and cached.expires > time.monotonic():
        return cached.budgets
    chain = tenant_ancestor_ids(tenant_id)
    budgets = list(Budget.objects.filter(tenant_id__in=chain, is_active=True).select_related("tenant"))
    _chain_cache[tenant_id] = _ChainBudgets(
        time.monotonic() + settings.BUDGET_DEFINITION_CACHE_SECONDS, budgets
    )
    return budgets


def budget_definitions_forget() -> None:
    _chain_cache.clear()


@dataclass
class AllowanceDecision:
    allowed: bool
    reason: str
    budget: Budget | None
    spent_nanos: int | None
    remaining_nanos: int | None
    period_end: datetime | None
    suggested_model: str
    source: str  # "counters", "database", "none" or "unavailable"
    fresh: bool
    routing: RoutingChoice | None = None


def allowance_check(
    *,
    tenant_id: int,
    provider: str,
    model_id: str,
    tags: dict[str, str],
    estimated_cost_nanos: int,
    now: datetime,
    estimated_input_tokens: int | None = None,
) -> AllowanceDecision:
    """May this tenant spend `estimated_cost_nanos` now? Checks every applicable budget on the
    tenant and its ancestors against spend in its current period, from the Redis counters (one
    round trip) or, when they are unavailable, from the database; when neither can be read each
    budget's fail mode decides. Then the routing policies of the tenant and its ancestors may
    suggest another model (`routing`); a denying budget's fallback model goes first."""
    budgets = [
        budget
        for budget in _budgets_for_tenant(tenant_id)
        if budget_matches(budget, provider=provider, model_id=model_id, tags=tags)
    ]
    policies = routing_policies_for_tenant(tenant_id)
    call = (policies, model_id, tags, estimated_input_tokens)
    if not budgets:
        decision = AllowanceDecision(True, "No budget applies.", None, None, None, None, "", "none", True)
        return _routed(decision, *call, None)
    periods = [budget_current_period(budget, now) for budget in budgets]
    spent, source, fresh = _spent_for(budgets, periods)
    if spent is None:
        closed = [budget for budget in budgets if budget.fail_mode == Budget.FailMode.CLOSED]
        deciding = closed[0] if closed else budgets[0]
        reason = "Spend cannot be read; the budget fails " + ("closed." if closed else "open.")
        decision = AllowanceDecision(not closed, reason, deciding, None, None, None, "", "unavailable", False)
        return _routed(decision, *call, None)

    denying, tightest = None, None
    for budget, period, used in zip(budgets, periods, spent, strict=True):
        remaining = budget.amount_nanos - used
        entry = (remaining, budget, period, used)
        blocks = budget.action == Budget.Action.BLOCK and (
            used >= budget.amount_nanos or estimated_cost_nanos > remaining
        )
        if blocks and (denying is None or remaining < denying[0]):
            denying = entry
        if tightest is None or remaining < tightest[0]:
            tightest = entry
    remaining, budget, period, used = denying or tightest
    if denying:
        reason = (
            f"Budget '{budget.name}' of {budget.tenant.slug} has {money.nanos_to_str(max(remaining, 0))} USD left "
            f"of {money.nanos_to_str(budget.amount_nanos)} USD until {period.end.isoformat()}."
        )
    else:
        reason = "Within every applicable budget."
    decision = AllowanceDecision(
        allowed=denying is None,
        reason=reason,
        budget=budget,
        spent_nanos=used,
        remaining_nanos=remaining,
        period_end=period.end,
        suggested_model=budget.fallback_model if denying else "",
        source=source,
        fresh=fresh,
    )
    usage = [(used, applicable.amount_nanos) for applicable, used in zip(budgets, spent, strict=True)]
    return _routed(decision, *call, usage)


def _routed(
    decision: AllowanceDecision,
    policies,
    model_id: str,
    tags: dict[str, str],
    estimated_input_tokens: int | None,
    budget_usage: list[tuple[int, int]] | None,
) -> AllowanceDecision:
    """The decision with the routing policies' choice; a denying budget's fallback model stays the
    suggestion, otherwise the policy arm's model is."""
    if policies:
        decision.routing = routing_choose(
            policies,
            model_id=model_id,
            tags=tags,
            estimated_input_tokens=estimated_input_tokens,
            budget_usage=budget_usage,
        )
        if decision.routing is not None and not decision.suggested_model:
            decision.suggested_model = decision.routing.suggested_model
    return decision


def _spent_for(budgets: list[Budget], periods: list[Period]) -> tuple[list[int] | None, str, bool]:
    if counters_enabled():
        keys = [counter_key(budget.pk, period.key) for budget, period in zip(budgets, periods, strict=True)]
        try:
            values, reconciled = counters_read(keys)
        except CountersUnavailable:
            values = None
        if values is not None:
            # A budget without a counter yet (new, or Redis restarted) is read from the database.
            return (
                [
                    value if value is not None else budget_spend(budget, period)
                    for value, budget, period in zip(values, budgets, periods, strict=True)
                ],
                "counters",
                reconciled,
            )
    try:
        return (
            [budget_spend(budget, period) for budget, period in zip(budgets, periods, strict=True)],
            "database",
            True,
        )
    except DatabaseError:
        return None, "unavailable", False
