"""Reads for usage. Every read is scoped to what the caller may see."""

from chargeback.models import UsageRecord


def usage_record_list(*, principal):
    return UsageRecord.objects.visible_to(principal).select_related("tenant")
