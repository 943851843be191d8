from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tenants.models import Tenant


@extend_schema_field(
    {
        "type": "string",
        "anyOf": [{"format": "email"}, {"maxLength": 0}],
        "description": "An e-mail address, or empty when none is set.",
    }
)
class OptionalEmailField(serializers.CharField):
    """An e-mail address that may be empty (a model's `EmailField(blank=True)`), for output: the
    schema of DRF's EmailField says format "email", which an empty string is not."""


class TenantSlugField(serializers.SlugRelatedField):
    """A tenant named by its slug, for request bodies, limited to the tenants the request's key may
    see (none without a request). A NUL character is in no slug, and PostgreSQL refuses to compare
    text holding one: it is rejected here, as any other unknown slug, rather than reaching the
    database."""

    def __init__(self, **kwargs):
        kwargs.setdefault("slug_field", "slug")
        kwargs.setdefault("queryset", Tenant.objects.none())
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        return Tenant.objects.visible_to(request.auth if request else None)

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data.replace("\x00", "\\x00"))
        return super().to_internal_value(data)


class TenantSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    billing_email = OptionalEmailField(read_only=True)

    class Meta:
        model = Tenant
        fields = [
            "id",
            "slug",
            "name",
            "kind",
            "parent",
            "time_zone",
            "billing_currency",
            "billing_email",
            "markup_percent",
            "is_active",
            "created_at",
        ]
        read_only_fields = fields
