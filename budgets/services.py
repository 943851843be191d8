"""Writes for budgets: definitions, evaluation (alerts that fire once), counters."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import Actor, audit_record, audit_snapshot, audited_delete, audited_save
from budgets.counters import (
    CountersUnavailable,
    counter_key,
    counters_add,
    counters_enabled,
    counters_mark_reconciled,
    counters_set,
)
from budgets.models import Budget, BudgetAlert, BudgetThreshold, NotificationChannel
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
from budgets.webhook_targets import notification_target_validate
from chargeback.hooks import IngestedRecord

logger = logging.getLogger(__name__)
# Counters outlive their period a little, for late records and for the status of the last period.
COUNTER_GRACE = timedelta(days=35)


_PERCENT = Decimal("0.01")


def _budget_snapshot(budget_id: int | None) -> dict | None:
    """A budget's stored values with its thresholds, for the audit log."""
    budget = Budget.objects.filter(pk=budget_id).first() if budget_id is not None else None
    snapshot = audit_snapshot(budget)
    if snapshot is not None:
        snapshot["thresholds"] = [
            {
                "percent": str(threshold.percent),
                "on_actual": threshold.on_actual,
                "on_forecast": threshold.on_forecast,
            }
            for threshold in budget.thresholds.order_by("percent")
        ]
    return snapshot


def _budget_thresholds_replace(budget: Budget, thresholds: Iterable[dict]) -> None:
    """Make the budget's thresholds exactly `thresholds`. A threshold whose percent stays keeps its
    row, and with it its alerts: changing a budget must not make a crossing alert twice."""
    # The API's budget comes with its thresholds prefetched; after this they would be stale.
    getattr(budget, "_prefetched_objects_cache", {}).pop("thresholds", None)
    wanted = {Decimal(str(threshold["percent"])).quantize(_PERCENT): threshold for threshold in thresholds}
    existing = {threshold.percent.quantize(_PERCENT): threshold for threshold in budget.thresholds.all()}
    budget.thresholds.exclude(
        pk__in=[row.pk for percent, row in existing.items() if percent in wanted]
    ).delete()
    for percent, threshold in wanted.items():
        fields = {**threshold, "percent": percent}
        row = existing.get(percent)
        if row is None:
            BudgetThreshold.objects.create(budget=budget, **fields)
            continue
        changed = [name for name, value in fields.items() if getattr(row, name) != value]
        if changed:
            for name in changed:
                setattr(row, name, fields[name])
            row.save(update_fields=changed)


def budget_save(*, budget: Budget, thresholds: Iterable[dict] | None = None, actor: Actor = None) -> Budget:
    """Validate and save a budget, replacing its thresholds when given (dicts of percent, on_actual,
    on_forecast). Audited as `budget.create` or `budget.update`, thresholds included, by `actor`."""

    def write() -> None:
        budget.full_clean()
        budget.save()
        if thresholds is not None:
            _budget_thresholds_replace(budget, thresholds)

    audited_save(
        instance=budget,
        action="budget",
        actor=actor,
        tenant_id=budget.tenant_id,
        write=write,
        snapshot=_budget_snapshot,
    )
    budget_definitions_forget()
    return budget


def budget_delete(*, budget: Budget, actor: Actor = None) -> None:
    """Delete a budget with its thresholds and alerts (audited as `budget.delete`)."""
    audited_delete(
        instance=budget, action="budget", actor=actor, tenant_id=budget.tenant_id, snapshot=_budget_snapshot
    )
    budget_definitions_forget()


# Notification channels --------------------------------------------------------------------------


def _channel_snapshot(channel: NotificationChannel | None) -> dict | None:
    # Never the signing secret itself: only whether there is one.
    snapshot = audit_snapshot(channel, exclude=("id", "created_at", "secret"))
    if snapshot is not None:
        snapshot["has_secret"] = bool(channel.secret)
    return snapshot


@transaction.atomic
def notification_channel_save(*, channel: NotificationChannel, actor: Actor = None) -> NotificationChannel:
    """Validate and save a new or changed notification channel. Webhook and Slack targets must be
    allowed by the target policy (budgets.webhook_targets); a refused one is a ValidationError with
    code `notification_target_not_allowed`. Audited as `notification_channel.create` or `.update`
    (a changed secret shows as `secret_changed`, never the secret)."""
    current = (
        NotificationChannel.objects.select_for_update().filter(pk=channel.pk).first() if channel.pk else None
    )
    notification_target_validate(kind=channel.kind, target=channel.target)
    channel.full_clean()
    channel.save()
    before, after = _channel_snapshot(current), _channel_snapshot(channel)
    if current is not None and current.secret != channel.secret:
        after["secret_changed"] = True
    if after != before:
        audit_record(
            actor=actor,
            action="notification_channel.update" if current else "notification_channel.create",
            instance=channel,
            tenant_id=channel.tenant_id,
            before=before,
            after=after,
        )
    return channel


@transaction.atomic
def notification_channel_delete(*, channel: NotificationChannel, actor: Actor = None) -> None:
    """Delete a channel with its deliveries (audited as `notification_channel.delete`)."""
    before, channel_id = _channel_snapshot(NotificationChannel.objects.get(pk=channel.pk)), channel.pk
    channel.delete()
    audit_record(
        actor=actor,
        action="notification_channel.delete",
        instance=channel,
        object_id=channel_id,
        tenant_id=channel.tenant_id,
        before=before,
        after=None,
    )


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


def budgets_on_ingest(records: Iterable[IngestedRecord], tenant_chains: dict[int, list[int]]) -> None:
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


# After the broker or the cache failed, this process queues no evaluation for a while: every
# attempt on a hung server costs the ingest request that makes it up to a socket timeout, and
# beat's periodic evaluation catches up meanwhile. (Per process by design: it only spares this
# process's requests, and nothing has to agree across processes.)
EVALUATION_QUEUE_BACKOFF_SECONDS = 30
_evaluation_queue_blocked_until = 0.0


def budgets_schedule_evaluation(*, budget_ids: list[int]) -> None:
    """Queue an evaluation of these budgets a few seconds from now, at most one pending per budget.

    Best effort, on the ingest request's time: with the broker or the cache down nothing is
    queued, and beat's periodic evaluation notices the crossing instead."""
    from budgets.tasks import budgets_evaluate_task  # tasks import services; import here to avoid a cycle

    global _evaluation_queue_blocked_until
    if time.monotonic() < _evaluation_queue_blocked_until:
        return
    debounce = settings.BUDGET_EVALUATION_DEBOUNCE_SECONDS
    try:
        pending = [
            budget_id
            for budget_id in budget_ids
            if cache.add(_pending_key(budget_id), 1, timeout=debounce * 10)
        ]
    except Exception as error:  # the cache (Redis) is down: no debouncing, so no queueing either
        _evaluation_queue_blocked_until = time.monotonic() + EVALUATION_QUEUE_BACKOFF_SECONDS
        logger.warning("budget evaluation not queued: the cache is unavailable (%s)", error)
        return
    if not pending:
        return
    try:
        # One attempt, no publish retries: the request must not wait out a retry policy.
        budgets_evaluate_task.apply_async(args=[pending], countdown=debounce, retry=False)
    except Exception as error:  # the broker is down: beat's periodic evaluation catches up
        _evaluation_queue_blocked_until = time.monotonic() + EVALUATION_QUEUE_BACKOFF_SECONDS
        logger.warning("could not queue a budget evaluation (%s)", error)
        budgets_evaluation_started(budget_ids=pending)


def budgets_evaluation_started(*, budget_ids: list[int]) -> None:
    """Clear the pending marks, so that records arriving from now on queue a new evaluation."""
    try:
        cache.delete_many([_pending_key(budget_id) for budget_id in budget_ids])
    except Exception as error:  # the marks expire by themselves; the evaluation must still run
        logger.warning("budget evaluation marks not cleared: the cache is unavailable (%s)", error)


def _pending_key(budget_id: int) -> str:
    return f"budget-evaluation-pending:{budget_id}"
