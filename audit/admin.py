import json

from django.contrib import admin
from django.utils.html import format_html

from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit log is written by services only; here it is read."""

    list_display = [
        "occurred_at",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "tenant",
    ]
    list_filter = ["action", "object_type", "actor_type", "tenant"]
    search_fields = ["actor_label", "object_repr", "object_id", "action"]
    date_hierarchy = "occurred_at"
    list_select_related = ["tenant"]
    fields = [
        "occurred_at", "actor_type", "actor_label", "actor_user", "actor_api_key", "action", "object_type",
        "object_id", "object_repr", "tenant", "before_json", "after_json",
    ]  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="before")
    def before_json(self, event):
        return format_html("<pre>{}</pre>", json.dumps(event.before, indent=2, sort_keys=True))

    @admin.display(description="after")
    def after_json(self, event):
        return format_html("<pre>{}</pre>", json.dumps(event.after, indent=2, sort_keys=True))
