"""Celery tasks: each takes ids or ISO timestamps and calls a service."""

from datetime import datetime, timedelta

from celery import shared_task
from django.utils import timezone

from chargeback.selectors import usage_rollups_mismatched_hours
from chargeback.services import statements_monthly_run, usage_rollups_rebuild


@shared_task(acks_late=True)  # idempotent: a rebuild recomputes the same rows from raw records
def usage_rollups_rebuild_task(start: str, end: str, tenant_ids: list[int] | None = None) -> int:
    return usage_rollups_rebuild(
        tenant_ids=tenant_ids, start=datetime.fromisoformat(start), end=datetime.fromisoformat(end)
    )


@shared_task(acks_late=True)
def usage_rollups_verify_recent(hours: int = 24) -> int:
    """Compare the last hours' rollups with the raw records and rebuild any hour that disagrees."""
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours + 1)
    repaired = 0
    for hour in usage_rollups_mismatched_hours(start=start, end=end):
        usage_rollups_rebuild(start=hour, end=hour + timedelta(hours=1))
        repaired += 1
    return repaired


@shared_task(acks_late=True)  # idempotent: drafts regenerate, and finalizing twice changes nothing
def statements_monthly_task() -> dict[str, int]:
    return statements_monthly_run()
