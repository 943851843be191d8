"""`Authorization: Bearer <key>` authentication for the API."""

import hmac

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from tenants.selectors import api_key_get_by_prefix
from tenants.services import api_key_hash, api_key_split, api_key_touch


class ApiKeyUser:
    """What `request.user` is for an API key: authenticated, never staff, tied to the key."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, api_key):
        self.api_key = api_key

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    # Error reports (DEBUG pages, reporters that show frame locals) must not show the presented key.
    @sensitive_variables("header", "raw_key", "split")
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(_("The Authorization header must be 'Bearer <key>'."))
        try:
            raw_key = header[1].decode()
        except UnicodeDecodeError as error:
            raise exceptions.AuthenticationFailed(_("The API key contains invalid characters.")) from error
        split = api_key_split(raw_key)
        api_key = api_key_get_by_prefix(prefix=split[0]) if split else None
        # Compare digests in constant time so a timing channel cannot reveal the hash.
        if api_key is None or not hmac.compare_digest(api_key.secret_hash, api_key_hash(raw_key)):
            raise exceptions.AuthenticationFailed(_("Invalid or revoked API key."))
        if api_key.tenant_id is not None and not api_key.tenant.is_active:
            raise exceptions.AuthenticationFailed(_("The API key's tenant is deactivated."))
        api_key_touch(api_key=api_key, now=timezone.now())
        return ApiKeyUser(api_key), api_key

    def authenticate_header(self, request):
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "BearerApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "cbk_..."}
