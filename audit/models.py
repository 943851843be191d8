"""The audit log: who changed what, when, with the values before and after.

Events are written by the services that make the changes (never by signals or save()), in the
same transaction as the change, so an event exists exactly when its change was committed.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.scoping import TenantScopedQuerySet


class AuditEventQuerySet(TenantScopedQuerySet):
    pass


class AuditEvent(models.Model):
    class ActorType(models.TextChoices):
        USER = "user", "User (admin or pages)"
        API_KEY = "api_key", "API key"
        SYSTEM = "system", "System (beat, worker, command)"

    occurred_at = models.DateTimeField(default=timezone.now)
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    # The links may be cut when a user or key is deleted; actor_label keeps who it was.
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=300, help_text="Username, key prefix and name, or process.")
    action = models.CharField(max_length=64, help_text="<object>.<verb>, e.g. budget.update.")
    object_type = models.CharField(max_length=64, help_text="app_label.model, e.g. budgets.budget.")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=300, blank=True)
    # The tenant the object belongs to; null for global objects, which only global keys and staff
    # see. A deleted tenant's events become global rather than visible to a later tenant.
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "occurred_at"], name="audit_tenant_time_idx"),
            models.Index(fields=["object_type", "object_id"], name="audit_object_idx"),
            models.Index(fields=["action", "occurred_at"], name="audit_action_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.object_repr}"
