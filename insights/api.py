"""Anomalies, subscriptions, alert rules and forecasts over HTTP: thin views on the services and
selectors, every queryset scoped to the key's tenants (another tenant's object is a 404)."""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response

from chargeback.errors import ApiError
from chargeback.openapi import error_response
from insights.filters import (
    AlertRuleEventFilterSet,
    AlertRuleFilterSet,
    AnomalyFilterSet,
    AnomalySubscriptionFilterSet,
    ForecastFilterSet,
)
from insights.selectors import (
    alert_rule_event_list,
    alert_rule_list,
    anomaly_list,
    anomaly_subscription_list,
    forecast_list,
)
from insights.serializers import (
    AlertRuleEventSerializer,
    AlertRuleSerializer,
    AnomalyDetailSerializer,
    AnomalyFeedbackSerializer,
    AnomalySerializer,
    AnomalySubscriptionSerializer,
    ForecastSerializer,
)
from insights.services import (
    AnomalyActionError,
    anomaly_acknowledge,
    anomaly_feedback_set,
    anomaly_resolve,
)
from tenants.permissions import HasAdminScope, HasReadScope


class _ReadOrAdmin:
    """Reads need the read scope, changes the admin scope."""

    def get_permissions(self):
        return [HasReadScope()] if self.request.method in ("GET", "HEAD", "OPTIONS") else [HasAdminScope()]


# --- anomalies -------------------------------------------------------------------------------------


@extend_schema(tags=["anomalies"])
class AnomalyListApi(generics.ListAPIView):
    serializer_class = AnomalySerializer
    filterset_class = AnomalyFilterSet
    permission_classes = [HasReadScope]

    def get_queryset(self):
        return anomaly_list(principal=self.request.auth)

    @extend_schema(summary="Cost anomalies this key may see, newest first")
    def get(self, request):
        return self.list(request)


@extend_schema(tags=["anomalies"])
class AnomalyDetailApi(generics.GenericAPIView):
    serializer_class = AnomalyDetailSerializer
    permission_classes = [HasReadScope]

    def get_queryset(self):
        return anomaly_list(principal=self.request.auth)

    @extend_schema(summary="One anomaly, with its anomalous points")
    def get(self, request, pk):
        return Response(self.get_serializer(self.get_object()).data)


class _AnomalyActionApi(generics.GenericAPIView):
    serializer_class = AnomalyDetailSerializer
    permission_classes = [HasAdminScope]

    def get_queryset(self):
        return anomaly_list(principal=self.request.auth)

    def _act(self, action, **arguments):
        with transaction.atomic():
            anomaly = self.get_queryset().select_for_update().get(pk=self.get_object().pk)
            try:
                anomaly = action(anomaly=anomaly, **arguments)
            except AnomalyActionError as error:
                raise ApiError(str(error), code="invalid_state", status_code=409) from error
        return Response(AnomalyDetailSerializer(anomaly, context=self.get_serializer_context()).data)


@extend_schema(
    tags=["anomalies"],
    request=None,
    summary="Acknowledge an open anomaly (scope admin)",
    responses={
        200: AnomalyDetailSerializer,
        409: error_response("A resolved anomaly cannot be acknowledged (code `invalid_state`)."),
    },
)
class AnomalyAcknowledgeApi(_AnomalyActionApi):
    def post(self, request, pk):
        return self._act(anomaly_acknowledge)


@extend_schema(tags=["anomalies"], request=None, summary="Resolve an anomaly by hand (scope admin)")
class AnomalyResolveApi(_AnomalyActionApi):
    def post(self, request, pk):
        return self._act(anomaly_resolve)


@extend_schema(
    tags=["anomalies"],
    request=AnomalyFeedbackSerializer,
    summary="Say whether it was an anomaly, a false alarm or planned (scope admin)",
)
class AnomalyFeedbackApi(_AnomalyActionApi):
    def post(self, request, pk):
        serializer = AnomalyFeedbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._act(
            anomaly_feedback_set,
            feedback=serializer.validated_data["feedback"],
            note=serializer.validated_data["note"],
        )


# --- subscriptions and alert rules (plain definitions) -----------------------------------------------


class _DefinitionListApi(_ReadOrAdmin, generics.ListCreateAPIView):
    def perform_create(self, serializer):
        instance = serializer.Meta.model(**serializer.validated_data)
        instance.full_clean()
        instance.save()
        serializer.instance = instance


class _DefinitionDetailApi(_ReadOrAdmin, generics.RetrieveUpdateDestroyAPIView):
    def perform_update(self, serializer):
        instance = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(instance, name, value)
        instance.full_clean()
        instance.save()


@extend_schema(tags=["anomalies"])
class AnomalySubscriptionListApi(_DefinitionListApi):
    serializer_class = AnomalySubscriptionSerializer
    filterset_class = AnomalySubscriptionFilterSet

    def get_queryset(self):
        return anomaly_subscription_list(principal=self.request.auth)

    @extend_schema(summary="Anomaly notification subscriptions")
    def get(self, request):
        return self.list(request)

    @extend_schema(summary="Subscribe a tenant's channels to its anomalies (scope admin)")
    def post(self, request):
        return self.create(request)


@extend_schema(tags=["anomalies"])
class AnomalySubscriptionDetailApi(_DefinitionDetailApi):
    serializer_class = AnomalySubscriptionSerializer

    def get_queryset(self):
        return anomaly_subscription_list(principal=self.request.auth)

    @extend_schema(summary="One subscription")
    def get(self, request, pk):
        return self.retrieve(request, pk=pk)

    @extend_schema(summary="Replace a subscription (scope admin)")
    def put(self, request, pk):
        return self.update(request, pk=pk)

    @extend_schema(summary="Change a subscription (scope admin)")
    def patch(self, request, pk):
        return self.partial_update(request, pk=pk)

    @extend_schema(summary="Delete a subscription (scope admin)", responses={204: None})
    def delete(self, request, pk):
        return self.destroy(request, pk=pk)


@extend_schema(tags=["alert rules"])
class AlertRuleListApi(_DefinitionListApi):
    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilterSet

    def get_queryset(self):
        return alert_rule_list(principal=self.request.auth).prefetch_related("events")

    @extend_schema(summary="Static alert rules")
    def get(self, request):
        return self.list(request)

    @extend_schema(summary="Create an alert rule (scope admin)")
    def post(self, request):
        return self.create(request)


@extend_schema(tags=["alert rules"])
class AlertRuleDetailApi(_DefinitionDetailApi):
    serializer_class = AlertRuleSerializer

    def get_queryset(self):
        return alert_rule_list(principal=self.request.auth).prefetch_related("events")

    @extend_schema(summary="One alert rule")
    def get(self, request, pk):
        return self.retrieve(request, pk=pk)

    @extend_schema(summary="Replace an alert rule (scope admin)")
    def put(self, request, pk):
        return self.update(request, pk=pk)

    @extend_schema(summary="Change an alert rule (scope admin)")
    def patch(self, request, pk):
        return self.partial_update(request, pk=pk)

    @extend_schema(summary="Delete an alert rule (scope admin)", responses={204: None})
    def delete(self, request, pk):
        return self.destroy(request, pk=pk)


@extend_schema(tags=["alert rules"])
class AlertRuleEventListApi(generics.ListAPIView):
    serializer_class = AlertRuleEventSerializer
    filterset_class = AlertRuleEventFilterSet
    permission_classes = [HasReadScope]

    def get_queryset(self):
        return alert_rule_event_list(principal=self.request.auth)

    @extend_schema(summary="Breaches of alert rules, firing and resolved")
    def get(self, request):
        return self.list(request)


# --- forecasts --------------------------------------------------------------------------------------


@extend_schema(tags=["forecasts"])
class ForecastListApi(generics.ListAPIView):
    serializer_class = ForecastSerializer
    filterset_class = ForecastFilterSet
    permission_classes = [HasReadScope]

    def get_queryset(self):
        return forecast_list(principal=self.request.auth)

    @extend_schema(summary="Month-end and budget period-end forecasts with 80 % intervals")
    def get(self, request):
        return self.list(request)


@extend_schema(tags=["forecasts"])
class ForecastDetailApi(generics.GenericAPIView):
    serializer_class = ForecastSerializer
    permission_classes = [HasReadScope]

    def get_queryset(self):
        return forecast_list(principal=self.request.auth)

    @extend_schema(summary="One forecast")
    def get(self, request, pk):
        return Response(self.get_serializer(self.get_object()).data, status=status.HTTP_200_OK)
