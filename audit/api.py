from drf_spectacular.utils import extend_schema
from rest_framework import generics

from audit.filters import AuditEventFilterSet
from audit.selectors import audit_event_list
from audit.serializers import AuditEventSerializer
from chargeback.pagination import CursorPagination
from tenants.permissions import HasAdminScope


class AuditEventPagination(CursorPagination):
    ordering = ("-occurred_at", "-id")


@extend_schema(
    tags=["audit"],
    summary="Audit log of admin changes (scope admin), newest first",
    description=(
        "Who (user, API key or system) changed what (price overrides, budgets and thresholds, "
        "allocation rules, notification channels, statement finalize/void, API keys), when, with "
        "the values before and after. A tenant key sees the events of its tenant and descendants; "
        "events of global objects are visible to global keys only."
    ),
)
class AuditEventListApi(generics.ListAPIView):
    serializer_class = AuditEventSerializer
    permission_classes = [HasAdminScope]
    filterset_class = AuditEventFilterSet
    pagination_class = AuditEventPagination

    def get_queryset(self):
        return audit_event_list(principal=self.request.auth)
