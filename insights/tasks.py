"""Celery tasks for insights: each takes ids and calls a service. Beat runs the *_all tasks, which
fan out one task per tenant (or rule) so that workers share the work."""

from celery import shared_task

from insights import services, weekly_review_services
from insights.models import AlertRule
from tenants.models import Tenant


def _active_tenant_ids() -> list[int]:
    return list(Tenant.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True))


# Idempotent (a rerun finds the same points; anomalies are unique per ongoing series, deliveries
# per channel and key), so a task lost with its worker may run again.
@shared_task(acks_late=True)
def anomalies_detect_tenant_task(tenant_id: int) -> int:
    summary = services.anomalies_detect_tenant(tenant_id=tenant_id)
    return len(summary.opened)


@shared_task(acks_late=True)
def anomalies_detect_all_task() -> int:
    tenant_ids = _active_tenant_ids()
    for tenant_id in tenant_ids:
        anomalies_detect_tenant_task.delay(tenant_id)
    return len(tenant_ids)


# Not acks_late: a digest that ran twice would not resend anomalies (they are recorded as
# notified), but a crash between the delivery and the bookkeeping could.
@shared_task
def anomaly_digests_send_task() -> int:
    return services.anomaly_digests_send()


@shared_task(acks_late=True)  # one open event per rule, by constraint; deliveries once per key
def alert_rule_evaluate_task(rule_id: int) -> bool:
    return services.alert_rule_evaluate(rule_id=rule_id) is not None


@shared_task(acks_late=True)
def alert_rules_evaluate_all_task() -> int:
    rule_ids = list(AlertRule.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True))
    for rule_id in rule_ids:
        alert_rule_evaluate_task.delay(rule_id)
    return len(rule_ids)


@shared_task(acks_late=True)  # forecasts are replaced, never added
def forecasts_refresh_tenant_task(tenant_id: int) -> int:
    return services.forecasts_refresh_tenant(tenant_id=tenant_id)


@shared_task(acks_late=True)
def forecasts_refresh_all_task() -> int:
    tenant_ids = _active_tenant_ids()
    for tenant_id in tenant_ids:
        forecasts_refresh_tenant_task.delay(tenant_id)
    return len(tenant_ids)


# Deliveries are once per channel and week (dedupe key), so a rerun sends nothing twice.
@shared_task(acks_late=True)
def weekly_review_send_task(tenant_id: int) -> int:
    tenant = Tenant.objects.filter(pk=tenant_id, is_active=True).first()
    if tenant is None:
        return 0
    return len(weekly_review_services.weekly_review_send(tenant=tenant))


@shared_task(acks_late=True)
def weekly_reviews_send_all_task() -> int:
    tenant_ids = weekly_review_services.weekly_review_tenant_ids()
    for tenant_id in tenant_ids:
        weekly_review_send_task.delay(tenant_id)
    return len(tenant_ids)
