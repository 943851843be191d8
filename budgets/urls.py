from django.urls import path

from budgets.api import AllowanceApi, BudgetDetailApi, BudgetListApi, BudgetStatusApi

urlpatterns = [
    path("budgets/", BudgetListApi.as_view(), name="budget-list"),
    path("budgets/<int:pk>/", BudgetDetailApi.as_view(), name="budget-detail"),
    path("budgets/<int:pk>/status", BudgetStatusApi.as_view(), name="budget-status"),
    path("allowance/", AllowanceApi.as_view(), name="allowance"),
]
