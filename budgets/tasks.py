"""Celery tasks for budgets: each takes ids and calls a service."""

import logging

from celery import shared_task

from budgets.models import NotificationDelivery
from budgets.notifications import (
    DeliveryAbandoned,
    DeliveryFailed,
    notification_deliver,
    notification_deliveries_retry_pending,
)

logger = logging.getLogger(__name__)


# Not acks_late: sending twice is not harmless. Retries wait 30 s, 60 s, ... up to 600 s (with
# jitter): about 25 minutes in all before the delivery is failed.
@shared_task(
    bind=True,
    autoretry_for=(DeliveryFailed,),
    dont_autoretry_for=(DeliveryAbandoned,),
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=6,
)
def notification_deliver_task(self, delivery_id: int) -> str | None:
    """Send one delivery; a failed attempt is retried, and the last one marks the delivery failed."""
    final_attempt = self.request.retries >= self.max_retries
    try:
        return notification_deliver(delivery_id=delivery_id, final_attempt=final_attempt).status
    except NotificationDelivery.DoesNotExist:
        logger.info("Notification delivery %s no longer exists (channel deleted)", delivery_id)
        return None


@shared_task
def notification_deliveries_retry_pending_task() -> int:
    return notification_deliveries_retry_pending()


@shared_task(acks_late=True)  # idempotent: alerts are unique per budget, period, threshold and kind
def budgets_evaluate_task(budget_ids: list[int]) -> int:
    from budgets.services import budget_evaluate, budgets_evaluation_started

    budgets_evaluation_started(budget_ids=budget_ids)
    return sum(len(budget_evaluate(budget_id=budget_id)) for budget_id in budget_ids)


@shared_task(acks_late=True)
def budgets_evaluate_all_task() -> int:
    from budgets.services import budgets_evaluate_all

    return budgets_evaluate_all()


@shared_task(acks_late=True)
def budget_counters_reconcile_task() -> int:
    from budgets.services import budget_counters_reconcile

    return budget_counters_reconcile()
