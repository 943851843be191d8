from rest_framework import serializers

from tenants.models import Tenant


class TenantSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="slug", read_only=True)

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
