import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from tenants.scoping import TenantScopedQuerySet


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone name.", code="invalid_time_zone")


class TenantQuerySet(TenantScopedQuerySet):
    tenant_field = "id"


class Tenant(models.Model):
    class Kind(models.TextChoices):
        ORGANIZATION = "organization", "Organization"
        TEAM = "team", "Team"
        CUSTOMER = "customer", "Customer"
        PROJECT = "project", "Project"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.TEAM)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    billing_currency = models.CharField(max_length=3, default="USD", choices=[("USD", "USD")])
    billing_email = models.EmailField(blank=True)
    # Markup (positive) or discount (negative) on list cost, in percent; None inherits the parent's.
    markup_percent = models.DecimalField(max_digits=7, decimal_places=4, null=True, blank=True)
    # Receives a monthly statement for its subtree (less the subtrees of billable descendants).
    is_billable = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        indexes = [models.Index(fields=["parent"], name="tenant_parent_idx")]

    def __str__(self) -> str:
        return self.slug


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        INGEST = "ingest", "Ingest"
        READ = "read", "Read"
        ADMIN = "admin", "Admin"

    name = models.CharField(max_length=200)
    # The visible part of the key ("cbk_" + 12 characters); the secret part is only hashed.
    prefix = models.CharField(max_length=32, unique=True)
    secret_hash = models.CharField(max_length=64)
    # None: a global key that sees every tenant.
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    scopes = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_global(self) -> bool:
        return self.tenant_id is None


class TenantMembership(models.Model):
    """A person's access to a tenant's pages: that tenant and every tenant below it.

    Staff users see every tenant without memberships; a user with none sees nothing.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user", "tenant__slug"]
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_user_tenant_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.tenant}"
