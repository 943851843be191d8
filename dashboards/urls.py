from django.urls import path

from dashboards import views

app_name = "dashboards"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("tenants/", views.tenant_drill_down, name="tenants"),
    path("tenants/<slug:slug>/", views.tenant_drill_down, name="tenant"),
    path("budgets/", views.budgets_page, name="budgets"),
    path("statements/", views.statements_page, name="statements"),
    path("statements/<int:pk>/pdf", views.statement_pdf, name="statement-pdf"),
    path("statements/<int:pk>/csv", views.statement_csv, name="statement-csv"),
    path("costs.csv", views.costs_csv, name="costs-csv"),
    path("savings/", views.savings_page, name="savings"),
    path("savings/csv", views.savings_csv, name="savings-csv"),
    path("savings/pdf", views.savings_pdf, name="savings-pdf"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
]
