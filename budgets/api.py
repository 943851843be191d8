from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from budgets.filters import BudgetFilterSet, NotificationChannelFilterSet
from budgets.models import Budget, NotificationChannel, RoutingPolicy
from budgets.routing_selectors import routing_policy_list
from budgets.routing_services import routing_policy_delete, routing_policy_save
from budgets.selectors import allowance_check, budget_list, budget_status, notification_channel_list
from budgets.serializers import (
    AllowanceRequestSerializer,
    AllowanceResponseSerializer,
    BudgetSerializer,
    BudgetStatusSerializer,
    NotificationChannelSerializer,
    RoutingPolicySerializer,
    allowance_request_fast,
    allowance_response_data,
)
from budgets.services import (
    budget_delete,
    budget_save,
    notification_channel_delete,
    notification_channel_save,
)
from chargeback import money
from chargeback.errors import ApiError
from chargeback.openapi import error_response
from chargeback.pricing import (
    GENAI_PRICES_CACHE,
    TokenBuckets,
    model_id_for,
    normalize_model,
    normalize_provider,
)
from chargeback.throttling import RETRY_AFTER_HEADER, AllowanceRateThrottle
from chargeback.usage_api import _ERROR_RESPONSE as ERROR_RESPONSE
from tenants.models import Tenant
from tenants.permissions import HasAdminScope, HasIngestScope, HasReadScope
from tenants.scoping import visible_tenant_ids


def _budget_from(data: dict, budget: Budget | None = None) -> tuple[Budget, list[dict] | None]:
    data = dict(data)
    thresholds = data.pop("thresholds", None)
    budget = budget or Budget()
    for field, value in data.items():
        setattr(budget, field, value)
    return budget, thresholds


class _BudgetPermissions:
    def get_permissions(self):
        return [HasReadScope()] if self.request.method in ("GET", "HEAD", "OPTIONS") else [HasAdminScope()]

    def get_queryset(self):
        return budget_list(principal=self.request.auth)


@extend_schema(tags=["budgets"])
class BudgetListApi(_BudgetPermissions, generics.ListAPIView):
    serializer_class = BudgetSerializer
    filterset_class = BudgetFilterSet

    @extend_schema(summary="Budgets this key may see")
    def get(self, request):
        return self.list(request)

    @extend_schema(summary="Create a budget (scope admin)", responses={201: BudgetSerializer})
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        budget, thresholds = _budget_from(serializer.validated_data)
        budget = budget_save(budget=budget, thresholds=thresholds, actor=request.auth)
        return Response(self.get_serializer(budget).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["budgets"])
class BudgetDetailApi(_BudgetPermissions, generics.GenericAPIView):
    serializer_class = BudgetSerializer

    @extend_schema(summary="One budget")
    def get(self, request, pk):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(summary="Replace a budget (scope admin)")
    def put(self, request, pk):
        return self._update(request, partial=False)

    @extend_schema(summary="Change a budget (scope admin)")
    def patch(self, request, pk):
        return self._update(request, partial=True)

    @extend_schema(summary="Delete a budget (scope admin)", responses={204: None})
    def delete(self, request, pk):
        budget_delete(budget=self.get_object(), actor=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request, *, partial):
        budget = self.get_object()
        serializer = self.get_serializer(budget, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        budget, thresholds = _budget_from(serializer.validated_data, budget)
        budget = budget_save(budget=budget, thresholds=thresholds, actor=request.auth)
        return Response(self.get_serializer(budget).data)


@extend_schema(tags=["budgets"], summary="Spend, forecast and thresholds in the current period")
class BudgetStatusApi(generics.GenericAPIView):
    serializer_class = BudgetStatusSerializer
    permission_classes = [HasReadScope]

    def get_queryset(self):
        return budget_list(principal=self.request.auth)

    def get(self, request, pk):
        return Response(self.get_serializer(budget_status(self.get_object(), timezone.now())).data)


class HasIngestOrReadScope(HasIngestScope):
    def has_permission(self, request, view) -> bool:
        return super().has_permission(request, view) or HasReadScope().has_permission(request, view)


@extend_schema(
    tags=["budgets"],
    summary="May this tenant spend now? (for gateways, before a call)",
    request=AllowanceRequestSerializer,
    parameters=[RETRY_AFTER_HEADER],
    responses={
        200: AllowanceResponseSerializer,
        404: error_response("The tenant does not exist or is outside this key's scope (code `not_found`)."),
        429: ERROR_RESPONSE,
    },
)
class AllowanceApi(generics.GenericAPIView):
    serializer_class = AllowanceRequestSerializer
    permission_classes = [HasIngestOrReadScope]
    # One pipelined Redis round trip per check (ALLOWANCE_RATE_LIMIT per key).
    throttle_classes = [AllowanceRateThrottle]

    def post(self, request):
        data = allowance_request_fast(request.data)
        if data is None:  # unusual or invalid: the serializer decides, and words the errors
            serializer = self.get_serializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
        tenant_id = self._tenant_id(request.auth, data.get("tenant"))
        provider = normalize_provider(data["provider"]) if data["provider"] else ""
        model_id = model_id_for(provider, data["model"]) if data["model"] else ""
        estimate = self._estimate(data, provider)
        decision = allowance_check(
            tenant_id=tenant_id,
            provider=provider,
            model_id=model_id,
            tags=data["tags"],
            estimated_cost_nanos=estimate,
            now=timezone.now(),
            estimated_input_tokens=data.get("estimated_input_tokens"),
        )
        decision.estimated_cost_nanos = estimate
        return Response(allowance_response_data(decision))

    @staticmethod
    def _tenant_id(api_key, slug: str | None) -> int:
        if slug is None:
            if api_key.tenant_id is None:
                raise ApiError("A global key must name the tenant.", code="missing_tenant")
            return api_key.tenant_id
        visible = visible_tenant_ids(api_key)
        tenant_id = Tenant.objects.filter(slug=slug).values_list("id", flat=True).first()
        if tenant_id is None or (visible is not None and tenant_id not in visible):
            raise ApiError(f"Tenant {slug!r} does not exist or is outside this key's scope.", code="not_found",
                           status_code=404)  # fmt: skip
        return tenant_id

    @staticmethod
    def _estimate(data: dict, provider: str) -> int:
        if data.get("estimated_cost_usd") is not None:
            return money.usd_to_nanos(data["estimated_cost_usd"])
        input_tokens, output_tokens = data.get("estimated_input_tokens"), data.get("estimated_output_tokens")
        if input_tokens is None and output_tokens is None:
            return 0
        if not data["model"]:
            raise ApiError("Token estimates need a model to be priced.", code="missing_model")
        found = GENAI_PRICES_CACHE.find(provider, normalize_model(data["model"], provider))
        if found is None:
            return 0  # an unpriced model cannot be estimated; spent-so-far still decides
        price = GENAI_PRICES_CACHE.price(found[0], found[1], timezone.now())
        return price.cost_nanos(TokenBuckets(uncached_input=input_tokens or 0, output=output_tokens or 0))


# --- routing policies ----------------------------------------------------------------------------


def _routing_policy_save(data: dict, actor, policy: RoutingPolicy | None = None) -> RoutingPolicy:
    data = dict(data)
    rules = data.pop("rules", None)
    policy = policy or RoutingPolicy()
    for field, value in data.items():
        setattr(policy, field, value)
    try:
        return routing_policy_save(policy=policy, rules=rules, actor=actor)
    except DjangoValidationError as error:
        raise ValidationError(
            error.message_dict if hasattr(error, "error_dict") else error.messages
        ) from error


class _RoutingPolicyPermissions:
    def get_permissions(self):
        return [HasReadScope()] if self.request.method in ("GET", "HEAD", "OPTIONS") else [HasAdminScope()]

    def get_queryset(self):
        return routing_policy_list(principal=self.request.auth)


@extend_schema(tags=["routing policies"])
class RoutingPolicyListApi(_RoutingPolicyPermissions, generics.ListAPIView):
    serializer_class = RoutingPolicySerializer

    @extend_schema(summary="Routing policies this key may see")
    def get(self, request):
        return self.list(request)

    @extend_schema(summary="Create a routing policy (scope admin)", responses={201: RoutingPolicySerializer})
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = _routing_policy_save(serializer.validated_data, request.auth)
        return Response(self.get_serializer(policy).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["routing policies"])
class RoutingPolicyDetailApi(_RoutingPolicyPermissions, generics.GenericAPIView):
    serializer_class = RoutingPolicySerializer

    @extend_schema(summary="One routing policy with its rules")
    def get(self, request, pk):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(summary="Replace a routing policy (scope admin)")
    def put(self, request, pk):
        return self._update(request, partial=False)

    @extend_schema(summary="Change a routing policy (scope admin)")
    def patch(self, request, pk):
        return self._update(request, partial=True)

    @extend_schema(summary="Delete a routing policy (scope admin)", responses={204: None})
    def delete(self, request, pk):
        routing_policy_delete(policy=self.get_object(), actor=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request, *, partial):
        policy = self.get_object()
        serializer = self.get_serializer(policy, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        policy = _routing_policy_save(serializer.validated_data, request.auth, policy)
        return Response(
            self.get_serializer(routing_policy_list(principal=request.auth).get(pk=policy.pk)).data
        )


# --- notification channels -----------------------------------------------------------------------


class _NotificationChannelScoped:
    # Admin scope even to read: webhook URLs (Slack's above all) are credentials themselves.
    permission_classes = [HasAdminScope]
    serializer_class = NotificationChannelSerializer

    def get_queryset(self):
        return notification_channel_list(principal=self.request.auth)


def _channel_from(data: dict, channel: NotificationChannel | None = None) -> NotificationChannel:
    channel = channel or NotificationChannel()
    for field, value in data.items():
        setattr(channel, field, value)
    return channel


_CHANNEL_ERRORS = {400: ERROR_RESPONSE, 403: ERROR_RESPONSE}


@extend_schema(tags=["notification channels"])
class NotificationChannelListApi(_NotificationChannelScoped, generics.ListAPIView):
    filterset_class = NotificationChannelFilterSet

    @extend_schema(summary="Notification channels of the tenants this key may see (scope admin)")
    def get(self, request):
        return self.list(request)

    @extend_schema(
        summary="Create a notification channel (scope admin)",
        description="Webhook and Slack targets must pass the target policy: 400 `notification_target_not_allowed`.",
        responses={201: NotificationChannelSerializer, **_CHANNEL_ERRORS},
    )
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = notification_channel_save(
            channel=_channel_from(serializer.validated_data), actor=request.auth
        )
        return Response(self.get_serializer(channel).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["notification channels"])
class NotificationChannelDetailApi(_NotificationChannelScoped, generics.GenericAPIView):
    @extend_schema(summary="One notification channel (scope admin)")
    def get(self, request, pk):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        summary="Replace a notification channel (scope admin)",
        responses={200: NotificationChannelSerializer, **_CHANNEL_ERRORS},
    )
    def put(self, request, pk):
        return self._update(request, partial=False)

    @extend_schema(
        summary="Change a notification channel (scope admin)",
        responses={200: NotificationChannelSerializer, **_CHANNEL_ERRORS},
    )
    def patch(self, request, pk):
        return self._update(request, partial=True)

    @extend_schema(
        summary="Delete a notification channel and its deliveries (scope admin)", responses={204: None}
    )
    def delete(self, request, pk):
        notification_channel_delete(channel=self.get_object(), actor=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request, *, partial):
        channel = self.get_object()
        serializer = self.get_serializer(channel, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        channel = notification_channel_save(
            channel=_channel_from(serializer.validated_data, channel), actor=request.auth
        )
        return Response(self.get_serializer(channel).data)
