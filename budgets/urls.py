from django.urls import path

from budgets.api import (
    AllowanceApi,
    BudgetDetailApi,
    BudgetListApi,
    BudgetStatusApi,
    NotificationChannelDetailApi,
    NotificationChannelListApi,
    RoutingPolicyDetailApi,
    RoutingPolicyListApi,
)

urlpatterns = [
    path("budgets/", BudgetListApi.as_view(), name="budget-list"),
    path("budgets/<int:pk>/", BudgetDetailApi.as_view(), name="budget-detail"),
    path("budgets/<int:pk>/status", BudgetStatusApi.as_view(), name="budget-status"),
    path("allowance/", AllowanceApi.as_view(), name="allowance"),
    path("notification-channels/", NotificationChannelListApi.as_view(), name="notification-channel-list"),
    path(
        "notification-channels/<int:pk>/",
        NotificationChannelDetailApi.as_view(),
        name="notification-channel-detail",
    ),
    path("routing-policies/", RoutingPolicyListApi.as_view(), name="routing-policy-list"),
    path("routing-policies/<int:pk>/", RoutingPolicyDetailApi.as_view(), name="routing-policy-detail"),
]
