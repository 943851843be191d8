"""Writes for insights: anomaly detection runs, anomaly actions and notifications, alert rules,
forecasts (and the budget forecaster registered with budgets)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.utils import timezone

from budgets.models import Budget
from budgets.notifications import notification_deliveries_create_keyed
from budgets.periods import Period
from budgets.selectors import budget_current_period, budget_spend
from chargeback import money
from chargeback.calendar import add_months, floor_hour, local_date, local_midnight, month_start
from chargeback.selectors import usage_cost_between
from insights.detection import DAY, HOUR, RULE_NAMES, detect
from insights.forecasting import METHOD_NONE, forecast_period
from insights.models import (
    AlertRule,
    AlertRuleEvent,
    Anomaly,
    AnomalyNotification,
    AnomalySubscription,
    Forecast,
    SeriesDimension,
)
from insights.selectors import (
    UNTAGGED,
    SpendSeries,
    alert_rule_metric,
    anomaly_root_causes,
    daily_cost_history,
    tenant_spend_series,
)
from tenants.models import Tenant
from tenants.selectors import tenant_ancestor_ids, tenant_descendant_ids

logger = logging.getLogger(__name__)

# Flagged points this close together are one anomaly (the same gap the benchmark merges across).
MERGE_GAP = {HOUR: timedelta(hours=3), DAY: timedelta(days=1)}
# An anomaly with no anomalous point for this long is over, and resolved.
RESOLVE_AFTER = {HOUR: timedelta(hours=6), DAY: timedelta(days=2)}
# New anomalies are opened only from flagged points this recent: each run re-reads weeks of
# history to judge the latest points causally, and must not open old anomalies from it.
OPEN_WITHIN = {HOUR: timedelta(hours=24), DAY: timedelta(days=3)}
# A stored budget forecast older than this is not used (the run rate is): beat refreshes hourly.
FORECAST_MAX_AGE = timedelta(hours=3)
HISTORY_DAYS = 120
PAYLOAD_TYPE_ANOMALY = "anomaly.detected"
PAYLOAD_TYPE_DIGEST = "anomaly.digest"
PAYLOAD_TYPE_RULE_FIRED = "alert_rule.fired"
PAYLOAD_TYPE_RULE_RESOLVED = "alert_rule.resolved"
_HUNDREDTH = Decimal("0.01")


# --- anomalies: detection -------------------------------------------------------------------------


@dataclass
class DetectionSummary:
    series: int = 0
    opened: list[int] = field(default_factory=list)
    extended: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)

    def add(self, other: DetectionSummary) -> None:
        self.series += other.series
        self.opened += other.opened
        self.extended += other.extended
        self.resolved += other.resolved


def anomalies_detect_tenant(*, tenant_id: int, now: datetime | None = None) -> DetectionSummary:
    """Run the seasonal detector over every series of one tenant (its total with descendants, its
    largest features and models; hourly and daily) and record what it finds: new anomalies are
    opened, ongoing ones extended (never duplicated), ended ones resolved; subscriptions are then
    notified. Idempotent for a given `now`: a rerun finds the same points and changes nothing."""
    now = now or timezone.now()
    summary = DetectionSummary()
    tenant = Tenant.objects.filter(pk=tenant_id, is_active=True).first()
    if tenant is None:
        return summary
    touched: list[Anomaly] = []
    for series in tenant_spend_series(tenant, now=now):
        summary.series += 1
        result = detect(series.amounts, granularity=series.granularity, phase=series.phase)
        touched += _record_series(tenant, series, result, now, summary)
    for anomaly in touched:
        anomaly_notify_subscribers(anomaly=anomaly)
    return summary


def anomalies_detect_all(*, now: datetime | None = None) -> DetectionSummary:
    """Detection for every active tenant, one after another (the Celery beat task fans out instead)."""
    now = now or timezone.now()
    summary = DetectionSummary()
    for tenant_id in Tenant.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True):
        summary.add(anomalies_detect_tenant(tenant_id=tenant_id, now=now))
    return summary


@dataclass
class _Run:
    direction: str
    indexes: list[int]


def _runs(series: SpendSeries, result) -> list[_Run]:
    """Flagged points grouped into runs: one direction each, gaps of at most MERGE_GAP."""
    gap = MERGE_GAP[series.granularity]
    runs: list[_Run] = []
    for index in np.flatnonzero(result.is_anomaly):
        index = int(index)
        direction = (
            Anomaly.Direction.INCREASE
            if series.amounts[index] >= result.expected[index]
            else Anomaly.Direction.DECREASE
        )
        if (
            runs
            and runs[-1].direction == direction
            and series.starts[index] - series.point_end(runs[-1].indexes[-1]) <= gap
        ):
            runs[-1].indexes.append(index)
        else:
            runs.append(_Run(direction, [index]))
    return runs


def _record_series(tenant: Tenant, series: SpendSeries, result, now: datetime, summary: DetectionSummary):
    """Open, extend and resolve the series' anomalies from the detector's verdicts."""
    touched = []
    key = {
        "tenant": tenant,
        "granularity": series.granularity,
        "dimension": series.dimension,
        "dimension_value": series.value,
    }
    series_end = series.point_end(len(series.starts) - 1)
    with transaction.atomic():
        ongoing = (
            Anomaly.objects.select_for_update().filter(**key).exclude(status=Anomaly.Status.RESOLVED).first()
        )
        for run in _runs(series, result):
            points = [_point(series, result, index) for index in run.indexes]
            run_start = series.starts[run.indexes[0]]
            run_end = series.point_end(run.indexes[-1])
            joins = (
                ongoing is not None
                and ongoing.direction == run.direction
                and run_start - ongoing.ended_at <= MERGE_GAP[series.granularity]
                and run_end > ongoing.started_at
            )
            if joins:
                _extend(ongoing, points)
                summary.extended.append(ongoing.pk)
                touched.append(ongoing)
                continue
            if run_end < now - OPEN_WITHIN[series.granularity] or (ongoing and run_end <= ongoing.ended_at):
                continue  # old news: already judged by an earlier run
            if Anomaly.objects.filter(**key, started_at__lt=run_end, ended_at__gt=run_start).exists():
                continue  # reported already, by an anomaly since resolved
            if ongoing is not None:
                _resolve(ongoing, now)
                summary.resolved.append(ongoing.pk)
            ongoing = _open(key, run, points, result)
            summary.opened.append(ongoing.pk)
            touched.append(ongoing)
        if ongoing is not None and ongoing.ended_at + RESOLVE_AFTER[series.granularity] <= series_end:
            _resolve(ongoing, now)
            summary.resolved.append(ongoing.pk)
    return touched


def _point(series: SpendSeries, result, index: int) -> dict[str, Any]:
    return {
        "at": series.starts[index].astimezone(UTC).isoformat(),
        "actual_nanos": round(float(series.amounts[index])),
        "expected_nanos": round(float(result.expected[index])),
        "score": round(float(result.score[index]), 3),
        "rule": RULE_NAMES.get(int(result.rule[index]), "") if result.rule is not None else "",
    }


def _open(key: dict, run: _Run, points: list[dict], result) -> Anomaly:
    anomaly = Anomaly(**key, direction=run.direction, rule=points[0]["rule"], points=[])
    _apply_points(anomaly, points)
    anomaly.save()
    anomaly.root_causes = anomaly_root_causes(anomaly)
    anomaly.save(update_fields=["root_causes"])
    return anomaly


def _extend(anomaly: Anomaly, points: list[dict]) -> None:
    before = (anomaly.started_at, anomaly.ended_at, anomaly.actual_nanos)
    _apply_points(anomaly, points)
    if (anomaly.started_at, anomaly.ended_at, anomaly.actual_nanos) != before:
        anomaly.root_causes = anomaly_root_causes(anomaly)
    anomaly.save()


def _apply_points(anomaly: Anomaly, points: list[dict]) -> None:
    """Merge points into the anomaly (a point seen again replaces its earlier version: late data)
    and recompute its window, sums, impact and scores."""
    step = timedelta(hours=1) if anomaly.granularity == HOUR else timedelta(days=1)
    merged = {point["at"]: point for point in anomaly.points}
    merged.update({point["at"]: point for point in points})
    ordered = [merged[at] for at in sorted(merged)]
    anomaly.points = ordered
    anomaly.started_at = datetime.fromisoformat(ordered[0]["at"])
    anomaly.ended_at = datetime.fromisoformat(ordered[-1]["at"]) + step
    anomaly.actual_nanos = sum(point["actual_nanos"] for point in ordered)
    anomaly.expected_nanos = sum(point["expected_nanos"] for point in ordered)
    anomaly.impact_nanos = anomaly.actual_nanos - anomaly.expected_nanos
    anomaly.impact_percent = (
        (Decimal(anomaly.impact_nanos * 100) / Decimal(anomaly.expected_nanos)).quantize(
            _HUNDREDTH, ROUND_HALF_EVEN
        )
        if anomaly.expected_nanos
        else None
    )
    impacts = [point["actual_nanos"] - point["expected_nanos"] for point in ordered]
    anomaly.max_impact_nanos = max(impacts, key=abs)
    anomaly.current_score = ordered[-1]["score"]
    anomaly.max_score = max((point["score"] for point in ordered), key=abs)


def _resolve(anomaly: Anomaly, now: datetime) -> None:
    anomaly.status = Anomaly.Status.RESOLVED
    anomaly.resolved_at = now
    anomaly.save(update_fields=["status", "resolved_at", "updated_at"])


# --- anomalies: actions ---------------------------------------------------------------------------


class AnomalyActionError(Exception):
    """An action that the anomaly's state does not allow."""


def anomaly_acknowledge(*, anomaly: Anomaly, now: datetime | None = None) -> Anomaly:
    """Mark an open anomaly as seen by someone; a resolved one stays resolved."""
    if anomaly.status == Anomaly.Status.RESOLVED:
        raise AnomalyActionError("A resolved anomaly cannot be acknowledged.")
    if anomaly.status == Anomaly.Status.OPEN:
        anomaly.status = Anomaly.Status.ACKNOWLEDGED
        anomaly.acknowledged_at = now or timezone.now()
        anomaly.save(update_fields=["status", "acknowledged_at", "updated_at"])
    return anomaly


def anomaly_resolve(*, anomaly: Anomaly, now: datetime | None = None) -> Anomaly:
    """Close an anomaly by hand. If spend is still anomalous, the next run opens a new one."""
    if anomaly.status != Anomaly.Status.RESOLVED:
        _resolve(anomaly, now or timezone.now())
    return anomaly


def anomaly_feedback_set(*, anomaly: Anomaly, feedback: str, note: str = "") -> Anomaly:
    """Record whether the anomaly was real, a false alarm, or planned activity."""
    if feedback not in Anomaly.Feedback.values:
        raise AnomalyActionError(f"Feedback must be one of {', '.join(Anomaly.Feedback.values)}.")
    anomaly.feedback = feedback
    anomaly.feedback_note = note
    anomaly.save(update_fields=["feedback", "feedback_note", "updated_at"])
    return anomaly


# --- anomalies: notifications ---------------------------------------------------------------------


def subscription_matches(subscription: AnomalySubscription, anomaly: Anomaly) -> bool:
    """Whether the anomaly is big enough, and in a direction, that the subscription wants."""
    if anomaly.direction == Anomaly.Direction.DECREASE and not subscription.include_decreases:
        return False
    if abs(anomaly.impact_nanos) < subscription.min_impact_nanos:
        return False
    # No percent when nothing was expected: an increase from zero passes any percent minimum.
    return anomaly.impact_percent is None or abs(anomaly.impact_percent) >= subscription.min_impact_percent


def _subscriptions_for(anomaly: Anomaly, frequency: str):
    return AnomalySubscription.objects.select_related("tenant").filter(
        tenant_id__in=tenant_ancestor_ids(anomaly.tenant_id), is_active=True, frequency=frequency
    )


def anomaly_notify_subscribers(*, anomaly: Anomaly, now: datetime | None = None) -> list[AnomalySubscription]:
    """Send the anomaly to every immediate subscription (of its tenant or an ancestor) whose
    minimums it meets, once per subscription; returns the subscriptions notified now. Detection
    never depends on this: an anomaly below every minimum is recorded all the same."""
    notified = []
    for subscription in _subscriptions_for(anomaly, AnomalySubscription.Frequency.IMMEDIATE):
        if not subscription_matches(subscription, anomaly):
            continue
        with transaction.atomic():
            _, created = AnomalyNotification.objects.get_or_create(subscription=subscription, anomaly=anomaly)
            if not created:
                continue
            notification_deliveries_create_keyed(
                tenant=subscription.tenant,
                dedupe_key=f"anomaly:{anomaly.pk}:subscription:{subscription.pk}",
                payload=anomaly_payload(anomaly),
            )
            Anomaly.objects.filter(pk=anomaly.pk, notified_at__isnull=True).update(
                notified_at=now or timezone.now()
            )
        notified.append(subscription)
    return notified


def anomaly_digests_send(*, now: datetime | None = None) -> int:
    """One digest per daily subscription with anomalies to report that it has not reported yet
    (those that meet its minimums, updated since its last digest); returns the digests sent."""
    now = now or timezone.now()
    sent = 0
    for subscription in AnomalySubscription.objects.select_related("tenant").filter(
        is_active=True, frequency=AnomalySubscription.Frequency.DAILY
    ):
        since = subscription.last_digest_at or now - timedelta(days=1)
        candidates = (
            Anomaly.objects.select_related("tenant")
            .filter(tenant_id__in=tenant_descendant_ids(subscription.tenant_id), updated_at__gte=since)
            .exclude(notifications__subscription=subscription)
            .order_by("-impact_nanos", "pk")
        )
        anomalies = [anomaly for anomaly in candidates if subscription_matches(subscription, anomaly)]
        with transaction.atomic():
            if anomalies:
                AnomalyNotification.objects.bulk_create(
                    [
                        AnomalyNotification(subscription=subscription, anomaly=anomaly)
                        for anomaly in anomalies
                    ],
                    ignore_conflicts=True,
                )
                notification_deliveries_create_keyed(
                    tenant=subscription.tenant,
                    dedupe_key=f"digest:{subscription.pk}:{now:%Y-%m-%dT%H}",
                    payload=digest_payload(subscription, anomalies, since, now),
                )
                sent += 1
            subscription.last_digest_at = now
            subscription.save(update_fields=["last_digest_at"])
    return sent


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _usd(nanos: int) -> str:
    cents = money.round_to_cents(abs(nanos))
    return ("-" if nanos < 0 else "") + "$" + format(Decimal(cents).scaleb(-2), ",f")


def _series_name(anomaly: Anomaly) -> str:
    if anomaly.dimension == SeriesDimension.TOTAL:
        return f"{anomaly.tenant.slug} (total)"
    return f"{anomaly.tenant.slug} {anomaly.dimension} {anomaly.dimension_value or UNTAGGED}"


def anomaly_summary_line(anomaly: Anomaly) -> str:
    percent = f" ({anomaly.impact_percent:+}%)" if anomaly.impact_percent is not None else ""
    sign = "+" if anomaly.impact_nanos >= 0 else ""
    return (
        f"Cost anomaly on {_series_name(anomaly)}: {sign}{_usd(anomaly.impact_nanos)}{percent} "
        f"({_usd(anomaly.actual_nanos)} spent, {_usd(anomaly.expected_nanos)} expected) "
        f"since {anomaly.started_at:%Y-%m-%d %H:%M} UTC"
    )


def _root_cause_lines(anomaly: Anomaly) -> list[str]:
    return [
        f"{cause['dimension']} {cause['value']}: {_usd(cause['impact_nanos'])} ({cause['share']:.0%} of the "
        f"{cause['dimension']} impact)"
        for cause in anomaly.root_causes[:5]
    ]


def anomaly_payload(anomaly: Anomaly) -> dict[str, Any]:
    """The JSON sent for an anomaly: to webhooks as is; Slack and e-mail show summary and details."""
    return {
        "type": PAYLOAD_TYPE_ANOMALY,
        "anomaly_id": anomaly.pk,
        "tenant": anomaly.tenant.slug,
        "granularity": anomaly.granularity,
        "dimension": anomaly.dimension,
        "dimension_value": anomaly.dimension_value,
        "direction": anomaly.direction,
        "start": _iso(anomaly.started_at),
        "end": _iso(anomaly.ended_at),
        "actual_usd": money.nanos_to_str(anomaly.actual_nanos),
        "expected_usd": money.nanos_to_str(anomaly.expected_nanos),
        "impact_usd": money.nanos_to_str(anomaly.impact_nanos),
        "impact_percent": None if anomaly.impact_percent is None else format(anomaly.impact_percent, "f"),
        "max_score": anomaly.max_score,
        "root_causes": [
            {
                "dimension": cause["dimension"],
                "value": cause["value"],
                "impact_usd": money.nanos_to_str(cause["impact_nanos"]),
                "share": cause["share"],
            }
            for cause in anomaly.root_causes
        ],
        "summary": anomaly_summary_line(anomaly),
        "details": _root_cause_lines(anomaly) or ["No single feature, model or tenant stands out."],
    }


def digest_payload(
    subscription: AnomalySubscription, anomalies: list[Anomaly], since: datetime, now: datetime
) -> dict[str, Any]:
    return {
        "type": PAYLOAD_TYPE_DIGEST,
        "subscription": {
            "id": subscription.pk,
            "name": subscription.name,
            "tenant": subscription.tenant.slug,
        },
        "period": {"start": _iso(since), "end": _iso(now)},
        "anomalies": [anomaly_payload(anomaly) for anomaly in anomalies],
        "summary": f"Cost anomaly digest for {subscription.tenant.slug}: {len(anomalies)} anomal"
        + ("y" if len(anomalies) == 1 else "ies"),
        "details": [anomaly_summary_line(anomaly) for anomaly in anomalies],
    }


# --- alert rules ----------------------------------------------------------------------------------------


def alert_rule_windows(rule: AlertRule, now: datetime) -> list[tuple[datetime, datetime]]:
    """The windows the rule looks at, oldest first: the last complete hours, or the days up to
    today so far (in the tenant's zone), as many as it needs breaching in a row."""
    count = rule.consecutive_windows
    if rule.window == AlertRule.Window.HOUR:
        end = floor_hour(now)
        return [
            (end - timedelta(hours=count - index), end - timedelta(hours=count - index - 1))
            for index in range(count)
        ]
    zone = rule.tenant.time_zone
    today = local_date(now, zone)
    windows = []
    for back in range(count - 1, -1, -1):
        day = today - timedelta(days=back)
        start = local_midnight(day, zone)
        end = local_midnight(day + timedelta(days=1), zone)
        windows.append((floor_hour(start), min(end, floor_hour(now) + timedelta(hours=1))))
    return windows


def _breaches(rule: AlertRule, value: Decimal | None) -> bool:
    if value is None:
        return False
    return value > rule.threshold if rule.comparison == AlertRule.Comparison.ABOVE else value < rule.threshold


def alert_rule_evaluate(*, rule_id: int, now: datetime | None = None) -> AlertRuleEvent | None:
    """Evaluate one rule: open an event (and notify) when every window breaches and none is open;
    resolve the open one (and notify) when the latest window no longer breaches. Returns the event
    opened or resolved now, else None. Safe to run concurrently: one open event per rule, by
    constraint."""
    now = now or timezone.now()
    rule = AlertRule.objects.select_related("tenant").filter(pk=rule_id, is_active=True).first()
    if rule is None:
        return None
    values = [alert_rule_metric(rule, start=start, end=end) for start, end in alert_rule_windows(rule, now)]
    firing = AlertRuleEvent.objects.filter(rule=rule, resolved_at__isnull=True).first()
    latest = values[-1]
    if firing is not None:
        if _breaches(rule, latest):
            firing.last_value = latest
            if (latest > firing.peak_value) == (rule.comparison == AlertRule.Comparison.ABOVE):
                firing.peak_value = latest
            firing.save(update_fields=["last_value", "peak_value"])
            return None
        with transaction.atomic():
            firing.resolved_at = now
            if latest is not None:
                firing.last_value = latest
            firing.save(update_fields=["resolved_at", "last_value"])
            notification_deliveries_create_keyed(
                tenant=rule.tenant,
                dedupe_key=f"alert-rule-event:{firing.pk}:resolved",
                payload=alert_rule_payload(firing, PAYLOAD_TYPE_RULE_RESOLVED),
            )
        return firing
    if not all(_breaches(rule, value) for value in values):
        return None
    try:
        with transaction.atomic():
            event = AlertRuleEvent.objects.create(
                rule=rule,
                fired_at=now,
                window_start=alert_rule_windows(rule, now)[0][0],
                value=latest,
                last_value=latest,
                peak_value=latest,
            )
            notification_deliveries_create_keyed(
                tenant=rule.tenant,
                dedupe_key=f"alert-rule-event:{event.pk}:fired",
                payload=alert_rule_payload(event, PAYLOAD_TYPE_RULE_FIRED),
            )
    except IntegrityError:
        return None  # another evaluation opened it first
    return event


def alert_rules_evaluate_all(*, now: datetime | None = None) -> int:
    """Evaluate every active rule; returns how many events were opened or resolved."""
    now = now or timezone.now()
    rule_ids = AlertRule.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True)
    return sum(alert_rule_evaluate(rule_id=rule_id, now=now) is not None for rule_id in rule_ids)


def _metric_text(rule: AlertRule, value: Decimal) -> str:
    if rule.metric in (AlertRule.Metric.COST, AlertRule.Metric.COST_PER_1K_TOKENS):
        return f"${value.quantize(Decimal('0.0001'))}"
    if rule.metric in (AlertRule.Metric.AVERAGE_LATENCY, AlertRule.Metric.P95_LATENCY):
        return f"{value.quantize(Decimal(1))} ms"
    if rule.metric == AlertRule.Metric.ERROR_RATE:
        return f"{(value * 100).quantize(_HUNDREDTH)}%"
    return f"{value.quantize(Decimal(1))}"


def alert_rule_payload(event: AlertRuleEvent, payload_type: str) -> dict[str, Any]:
    rule = event.rule
    scope = [f"feature {rule.feature}"] if rule.feature else []
    scope += [f"model {rule.model}"] if rule.model else []
    where = f" ({', '.join(scope)})" if scope else ""
    comparison = ">" if rule.comparison == AlertRule.Comparison.ABOVE else "<"
    condition = (
        f"{rule.get_metric_display()} per {rule.window} {comparison} {_metric_text(rule, rule.threshold)}"
    )
    if payload_type == PAYLOAD_TYPE_RULE_FIRED:
        summary = (
            f"Alert: {rule.tenant.slug} / {rule.name}{where}: {_metric_text(rule, event.value)} ({condition})"
        )
    else:
        summary = f"Resolved: {rule.tenant.slug} / {rule.name}{where}: back to {_metric_text(rule, event.last_value)}"
    return {
        "type": payload_type,
        "event_id": event.pk,
        "rule": {"id": rule.pk, "name": rule.name, "tenant": rule.tenant.slug, "metric": rule.metric},
        "condition": condition,
        "value": format(event.value, "f"),
        "last_value": format(event.last_value, "f"),
        "peak_value": format(event.peak_value, "f"),
        "fired_at": _iso(event.fired_at),
        "resolved_at": _iso(event.resolved_at) if event.resolved_at else None,
        "summary": summary,
        "details": [f"Condition: {condition}", f"Fired at {_iso(event.fired_at)}"],
    }


# --- forecasts --------------------------------------------------------------------------------------


def _forecast(
    *,
    history: np.ndarray,
    first_day,
    observed: int,
    period_end: datetime,
    now: datetime,
    seed: int,
):
    remaining_days = max((period_end - now) / timedelta(days=1), 0.0)
    return forecast_period(
        history,
        observed=observed,
        remaining_days=remaining_days,
        first_weekday=first_day.weekday(),
        seed=seed,
    )


def _store_forecast(lookup: dict, defaults: dict) -> Forecast:
    try:
        with transaction.atomic():
            forecast, _ = Forecast.objects.update_or_create(**lookup, defaults=defaults)
    except IntegrityError:  # a concurrent refresh created it: update that one
        forecast = Forecast.objects.get(**lookup)
        for name, value in defaults.items():
            setattr(forecast, name, value)
        forecast.save()
    return forecast


def month_forecast_refresh(*, tenant: Tenant, now: datetime | None = None) -> Forecast:
    """Recompute the forecast of the tenant's (with descendants) spend in its current calendar month."""
    now = now or timezone.now()
    zone = tenant.time_zone
    today = local_date(now, zone)
    first = month_start(today)
    start, end = local_midnight(first, zone), local_midnight(add_months(first, 1), zone)
    tenant_ids = tenant_descendant_ids(tenant.pk)
    history_start = today - timedelta(days=HISTORY_DAYS)
    history = daily_cost_history(tenant_ids=tenant_ids, start=history_start, end=today, time_zone=zone)
    observed = usage_cost_between(tenant_ids=tenant_ids, start=start, end=now)
    result = _forecast(
        history=history, first_day=history_start, observed=observed, period_end=end, now=now, seed=tenant.pk
    )
    return _store_forecast(
        {"tenant": tenant, "kind": Forecast.Kind.MONTH, "period_key": f"{first:%Y-%m}", "budget": None},
        _forecast_fields(result, start, end, now, observed),
    )


def budget_forecast_refresh(*, budget: Budget, now: datetime | None = None) -> Forecast:
    """Recompute the forecast of a budget's spend at the end of its current period."""
    now = now or timezone.now()
    period = budget_current_period(budget, now)
    zone = budget.tenant.time_zone
    today = local_date(now, zone)
    history_start = today - timedelta(days=HISTORY_DAYS)
    history = daily_cost_history(
        tenant_ids=tenant_descendant_ids(budget.tenant_id),
        start=history_start,
        end=today,
        time_zone=zone,
        provider=budget.provider,
        model=budget.model,
        tag_key=budget.tag_key,
        tag_value=budget.tag_value,
    )
    observed = budget_spend(budget, Period(period.key, period.start, min(now, period.end)))
    result = _forecast(
        history=history,
        first_day=history_start,
        observed=observed,
        period_end=period.end,
        now=now,
        seed=budget.pk,
    )
    return _store_forecast(
        {
            "tenant_id": budget.tenant_id,
            "kind": Forecast.Kind.BUDGET,
            "budget": budget,
            "period_key": period.key,
        },
        _forecast_fields(result, period.start, period.end, now, observed),
    )


def _forecast_fields(result, start: datetime, end: datetime, now: datetime, observed: int) -> dict:
    return {
        "period_start": start,
        "period_end": end,
        "computed_at": now,
        "actual_nanos": observed,
        "forecast_nanos": round(result.total),
        "lower_nanos": round(result.lower),
        "upper_nanos": round(result.upper),
        "method": result.method,
        "history_days": result.history_days,
    }


def forecasts_refresh_tenant(*, tenant_id: int, now: datetime | None = None) -> int:
    """The tenant's month forecast and those of its active budgets; returns how many were stored."""
    now = now or timezone.now()
    tenant = Tenant.objects.filter(pk=tenant_id, is_active=True).first()
    if tenant is None:
        return 0
    month_forecast_refresh(tenant=tenant, now=now)
    budgets = Budget.objects.select_related("tenant").filter(tenant=tenant, is_active=True)
    count = 1
    for budget in budgets.exclude(period=Budget.Period.DAY):
        budget_forecast_refresh(budget=budget, now=now)
        count += 1
    return count


def forecasts_refresh_all(*, now: datetime | None = None) -> int:
    now = now or timezone.now()
    tenant_ids = Tenant.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True)
    return sum(forecasts_refresh_tenant(tenant_id=tenant_id, now=now) for tenant_id in tenant_ids)


def insights_budget_forecaster(budget: Budget, period: Period, spent_nanos: int, now: datetime) -> int | None:
    """The forecaster budgets use while insights is installed (registered in InsightsConfig.ready).

    Reads the budget's stored forecast for the period (Celery beat refreshes them hourly; reading
    keeps budget evaluations and pages cheap) and moves it to now: spend so far plus the stored
    forecast's remaining spend for the share of the period still ahead. None, so that budgets use
    their run rate, for daily budgets (shorter than the model's step), without a forecast fresher
    than FORECAST_MAX_AGE, or without history to forecast from.
    """
    if budget.period == Budget.Period.DAY or now >= period.end:
        return None
    forecast = (
        Forecast.objects.filter(
            kind=Forecast.Kind.BUDGET,
            budget=budget,
            period_key=period.key,
            computed_at__gte=now - FORECAST_MAX_AGE,
            computed_at__lte=now,
        )
        .exclude(method=METHOD_NONE)
        .only("computed_at", "actual_nanos", "forecast_nanos")
        .first()
    )
    if forecast is None:
        return None
    remaining_then = max(forecast.forecast_nanos - forecast.actual_nanos, 0)
    still_ahead = (period.end - now) / (period.end - forecast.computed_at)
    return spent_nanos + round(remaining_then * min(max(still_ahead, 0.0), 1.0))
