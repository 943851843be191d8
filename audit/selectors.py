"""Reads of the audit log, always scoped to what the caller may see."""

from django.db.models import QuerySet

from audit.models import AuditEvent


def audit_event_list(*, principal) -> QuerySet[AuditEvent]:
    """Events of the tenants the principal may see (global objects' events: global keys and staff only)."""
    return AuditEvent.objects.visible_to(principal).select_related("tenant")
