from django import forms
from django.contrib import admin, messages
from django.db import transaction

from tenants.models import ApiKey, Tenant, TenantMembership
from tenants.services import (
    api_key_create,
    api_key_rename,
    api_key_revoke,
    tenant_check_parent,
    tenant_delete,
    tenant_membership_delete,
    tenant_membership_save,
    tenant_save,
)


class TenantAdminForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = [
            "slug",
            "name",
            "kind",
            "parent",
            "time_zone",
            "billing_currency",
            "billing_email",
            "markup_percent",
            "is_active",
        ]

    def clean_parent(self):
        parent = self.cleaned_data.get("parent")
        tenant_check_parent(self.instance, parent)
        return parent


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantAdminForm
    list_display = ["slug", "name", "kind", "parent", "time_zone", "billing_email", "is_active"]
    list_filter = ["kind", "is_active", "time_zone"]
    search_fields = ["slug", "name", "billing_email"]
    autocomplete_fields = ["parent"]
    prepopulated_fields = {"slug": ["name"]}

    def save_model(self, request, obj, form, change):
        tenant_save(tenant=obj, actor=request.user)

    def delete_model(self, request, obj):
        tenant_delete(tenant=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():  # all of them or none
            for tenant in queryset:
                tenant_delete(tenant=tenant, actor=request.user)


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["name", "tenant", "scopes"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "tenant", "scopes", "is_active", "created_at", "last_used_at"]
    list_filter = ["is_active", "tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "tenant", "scopes"]
        return ["name", "prefix", "tenant", "scopes", "is_active", "created_at", "last_used_at"]

    def get_readonly_fields(self, request, obj=None):
        # A key is revoked with the action (audited), never switched back on; scopes never change.
        return (
            [] if obj is None else ["prefix", "tenant", "scopes", "is_active", "created_at", "last_used_at"]
        )

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the audit log refers to keys

    def save_model(self, request, obj, form, change):
        if change:
            api_key_rename(api_key=obj, name=form.cleaned_data["name"], actor=request.user)
            return
        created, secret = api_key_create(
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            tenant=form.cleaned_data["tenant"],
            actor=request.user,
        )
        obj.pk = created.pk
        messages.warning(
            request, f"Copy this key now; it is not stored and will not be shown again: {secret}"
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for api_key in queryset:
            api_key_revoke(api_key=api_key, actor=request.user)


@admin.register(TenantMembership)
class TenantMembershipAdmin(admin.ModelAdmin):
    """Who may see which tenant's pages (with everything below it); staff users see every tenant."""

    list_display = ["user", "tenant", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["user__username", "user__email", "tenant__slug", "tenant__name"]
    autocomplete_fields = ["user", "tenant"]

    def save_model(self, request, obj, form, change):
        tenant_membership_save(membership=obj, actor=request.user)

    def delete_model(self, request, obj):
        tenant_membership_delete(membership=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():  # all of them or none
            for membership in queryset:
                tenant_membership_delete(membership=membership, actor=request.user)
