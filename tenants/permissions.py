"""Scope permissions: a key must carry the scope an endpoint needs (admin implies every scope)."""

from rest_framework.permissions import BasePermission

from tenants.models import ApiKey


class _ScopePermission(BasePermission):
    scope: str = ""
    message = "This API key lacks the required scope."
    code = "scope_missing"

    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False
        self.message = f"This API key lacks the '{self.scope}' scope."
        return self.scope in api_key.scopes or ApiKey.Scope.ADMIN in api_key.scopes


class HasIngestScope(_ScopePermission):
    scope = ApiKey.Scope.INGEST


class HasReadScope(_ScopePermission):
    scope = ApiKey.Scope.READ


class HasAdminScope(_ScopePermission):
    scope = ApiKey.Scope.ADMIN
