from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from budgets.selectors import budget_forecast, budget_status
from insights.forecasting import METHOD_ETS, METHOD_RUN_RATE, METHOD_SEASONAL_MEAN, forecast_period
from insights.models import Forecast
from insights.services import budget_forecast_refresh, forecasts_refresh_tenant, month_forecast_refresh
from tests.factories import BudgetFactory, TenantFactory
from tests.insights.conftest import NOW, record


def linear_weekly(days: int, *, seed: int = 1, noise: float = 0.05) -> np.ndarray:
    """A known series: a straight line ($100 a day, +$1 a day) times a weekly pattern, a little noise."""
    rng = np.random.default_rng(seed)
    index = np.arange(days)
    weekly = np.array([1.2, 1.0, 1.0, 1.0, 1.0, 0.5, 0.4])[index % 7]
    return (100 + index) * weekly * np.exp(rng.normal(0, noise, days))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_linear_plus_weekly_series_lands_within_its_interval(seed):
    series = linear_weekly(120 + 31, seed=seed)
    history, month = series[:120], series[120:]
    forecast = forecast_period(history, observed=0.0, remaining_days=31, seed=seed)
    assert forecast.method == METHOD_ETS
    assert forecast.lower <= month.sum() <= forecast.upper
    assert forecast.total == pytest.approx(month.sum(), rel=0.05)
    assert forecast.lower < forecast.total < forecast.upper


def test_mid_month_the_forecast_adds_the_rest_to_what_was_spent():
    series = linear_weekly(120 + 31)
    observed = series[120:134].sum()
    forecast = forecast_period(series[:134], observed=observed, remaining_days=17)
    assert forecast.total == pytest.approx(series[120:].sum(), rel=0.04)
    assert forecast.lower >= observed


def test_short_histories_fall_back_to_simpler_methods():
    series = linear_weekly(20)
    assert forecast_period(series, observed=0, remaining_days=10).method == METHOD_SEASONAL_MEAN
    few = forecast_period(series[:4], observed=0, remaining_days=10)
    assert few.method == METHOD_RUN_RATE
    assert few.total == pytest.approx(series[:4].mean() * 10)
    assert few.lower < few.total < few.upper
    nothing = forecast_period([], observed=5.0, remaining_days=10)
    assert (nothing.total, nothing.method) == (5.0, "none")


@pytest.mark.django_db
def test_month_forecasts_are_stored_per_tenant_and_month(ingest):
    tenant = TenantFactory(slug="team")
    start = NOW - timedelta(days=60)
    ingest(
        [
            record("team", start + timedelta(days=day, hours=10), float(amount))
            for day, amount in enumerate(linear_weekly(60))
        ]
    )
    forecast = month_forecast_refresh(tenant=tenant, now=NOW)
    assert (forecast.kind, forecast.period_key, forecast.method) == ("month", "2026-11", METHOD_ETS)
    assert forecast.period_start == datetime(2026, 11, 1, tzinfo=UTC)
    assert forecast.actual_nanos > 0
    assert forecast.lower_nanos <= forecast.forecast_nanos <= forecast.upper_nanos
    assert forecast.forecast_nanos > forecast.actual_nanos
    month_forecast_refresh(tenant=tenant, now=NOW + timedelta(hours=1))
    assert Forecast.objects.filter(tenant=tenant).count() == 1


@pytest.mark.django_db
def test_budget_forecasts_use_the_insights_forecast_when_there_is_one(ingest):
    tenant = TenantFactory(slug="team")
    budget = BudgetFactory(tenant=tenant, amount_nanos=10_000 * 10**9)
    start = NOW - timedelta(days=60)
    ingest(
        [
            record("team", start + timedelta(days=day, hours=10), float(amount))
            for day, amount in enumerate(linear_weekly(60))
        ]
    )
    status = budget_status(budget, NOW)
    run_rate = round(status["spent_nanos"] / status["period"].elapsed_fraction(NOW))
    assert status["forecast_nanos"] == run_rate  # no stored forecast yet: the run rate

    assert forecasts_refresh_tenant(tenant_id=tenant.pk, now=NOW) == 2  # the month and the budget
    stored = Forecast.objects.get(budget=budget)
    status = budget_status(budget, NOW)
    assert status["forecast_nanos"] == stored.forecast_nanos
    assert status["forecast_nanos"] != run_rate
    # Later in the period, the stored remainder shrinks with the time left.
    later = NOW + timedelta(hours=2)
    moved = budget_forecast(status["spent_nanos"], status["period"], later, budget)
    assert status["spent_nanos"] < moved < stored.forecast_nanos
    # A daily budget keeps its run rate.
    daily = BudgetFactory(tenant=tenant, period="day")
    assert budget_forecast_refresh(budget=daily, now=NOW).kind == "budget"
    assert budget_status(daily, NOW)["forecast_nanos"] == round(
        budget_status(daily, NOW)["spent_nanos"] / budget_status(daily, NOW)["period"].elapsed_fraction(NOW)
    )
