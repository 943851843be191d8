"""Period-end spend forecasts with an 80 % interval. Pure functions of daily amounts (no Django).

The method depends on how much history there is, like the cloud providers' (AWS shows none with
less than a billing cycle; we show a wider, simpler one instead of none):

- 28 days or more: an ETS model (statsmodels' ETSModel: additive errors, damped additive trend,
  additive weekday seasonality) on log(daily spend + c), c a tenth of the mean day: weekday
  patterns and growth are multiplicative in dollars. The interval comes from simulated future paths
  of the model, summed over the remaining days (days are correlated through the level and trend,
  so per-day intervals cannot simply be added), widened by the model's own in-sample error.
- 7 to 27 days: the mean of the last seven days per remaining day, times weekday factors once two
  weeks show them; the interval from the spread of weekly sums.
- 1 to 6 days: the run rate of the days seen, with a wide interval.

All amounts are floats in whatever unit the caller uses (the service passes nanos); the caller
rounds. `forecast_period` returns the spend of the whole period: what was observed plus what is
expected for the rest.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

METHOD_ETS = "ets"
METHOD_SEASONAL_MEAN = "seasonal_mean"
METHOD_RUN_RATE = "run_rate"
METHOD_NONE = "none"
ETS_MIN_DAYS = 28
SEASONAL_MIN_DAYS = 7
# Days of history the ETS model is fitted on (longer adds little and costs time).
ETS_WINDOW_DAYS = 120
SIMULATIONS = 400
ETS_INTERVAL_WIDENING = 1.6
# The 80 % interval: 10th and 90th percentiles.
LOWER_QUANTILE, UPPER_QUANTILE = 0.1, 0.9
_Z80 = 1.2816


@dataclass(frozen=True)
class PeriodForecast:
    total: float  # observed so far + expected for the rest of the period
    lower: float
    upper: float
    method: str
    history_days: int


def forecast_period(
    history,
    *,
    observed: float,
    remaining_days: float,
    first_weekday: int = 0,
    seed: int = 0,
) -> PeriodForecast:
    """The period's total spend given complete daily amounts before now (`history`, oldest first,
    the last one being yesterday), what the period has spent so far (`observed`, today's part
    included) and the days left (`remaining_days`, today's remaining share included, e.g. 23.4).

    `first_weekday` is the weekday of history[0] (Monday = 0), so that weekday effects land on the
    right future days. Deterministic for a given `seed`.
    """
    days = np.nan_to_num(np.asarray(history, dtype=float), nan=0.0)
    nonzero = np.flatnonzero(days > 0)
    if len(nonzero):
        # A tenant's history starts at its first spend.
        first_weekday = (first_weekday + int(nonzero[0])) % 7
        days = days[nonzero[0] :]
    else:
        days = days[:0]
    remaining_days = max(float(remaining_days), 0.0)
    count = len(days)
    if remaining_days == 0:
        return PeriodForecast(observed, observed, observed, METHOD_NONE, count)
    if count == 0:
        return PeriodForecast(observed, observed, observed, METHOD_NONE, 0)
    future_weekdays = (first_weekday + count + np.arange(math.ceil(remaining_days))) % 7
    weights = np.ones(len(future_weekdays))
    if remaining_days % 1:
        # Today is partly over: only its remaining share is still to come.
        weights[0] = remaining_days % 1
    if count >= ETS_MIN_DAYS:
        result = _ets(days[-ETS_WINDOW_DAYS:], weights, seed)
        if result is not None:
            mean, lower, upper = result
            return PeriodForecast(observed + mean, observed + lower, observed + upper, METHOD_ETS, count)
    if count >= SEASONAL_MIN_DAYS:
        mean, lower, upper = _seasonal_mean(days, first_weekday, future_weekdays, weights)
        return PeriodForecast(
            observed + mean, observed + lower, observed + upper, METHOD_SEASONAL_MEAN, count
        )
    mean, lower, upper = _run_rate(days, weights)
    return PeriodForecast(observed + mean, observed + lower, observed + upper, METHOD_RUN_RATE, count)


def _ets(days: np.ndarray, weights: np.ndarray, seed: int) -> tuple[float, float, float] | None:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    offset = max(0.1 * float(days.mean()), 1e-12)
    logged = np.log(days + offset)
    horizon = len(weights)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on short or flat series
            model = ETSModel(
                logged,
                error="add",
                trend="add",
                damped_trend=True,
                seasonal="add",
                seasonal_periods=7,
                initialization_method="heuristic" if len(logged) >= 35 else "estimated",
            )
            fit = model.fit(disp=False, maxiter=200)
            paths = fit.simulate(
                horizon, repetitions=SIMULATIONS, anchor="end", rng=np.random.default_rng(seed)
            )
    except Exception:  # a model that cannot be fitted falls back to the simpler method
        return None
    paths = np.asarray(paths).reshape(horizon, -1)
    if not np.all(np.isfinite(paths)):
        return None
    amounts = np.maximum(np.exp(paths) - offset, 0.0)
    totals = (amounts * weights[:, None]).sum(axis=0)
    point = float(np.mean(totals))
    lower, upper = (float(value) for value in np.quantile(totals, [LOWER_QUANTILE, UPPER_QUANTILE]))
    # The simulation knows the model's noise but not that its parameters are estimates nor that
    # spend has spikes and level changes the model does not: widen it (calibrated on
    # bench/forecast_eval.py's backtests, whose coverage it brings to the nominal 80 %).
    lower = point - ETS_INTERVAL_WIDENING * (point - lower)
    upper = point + ETS_INTERVAL_WIDENING * (upper - point)
    return point, max(min(lower, point), 0.0), max(upper, point)


def _weekday_factors(days: np.ndarray, first_weekday: int) -> np.ndarray:
    """Spend of each weekday relative to the mean day, from whole recent weeks (1 until two weeks)."""
    weeks = min(len(days) // 7, 8)
    if weeks < 2:
        return np.ones(7)
    recent = days[-weeks * 7 :]
    weekdays = (first_weekday + len(days) - weeks * 7 + np.arange(weeks * 7)) % 7
    mean = recent.mean()
    if mean <= 0:
        return np.ones(7)
    factors = np.array([recent[weekdays == weekday].mean() / mean for weekday in range(7)])
    return factors / factors.mean()


def _seasonal_mean(
    days: np.ndarray, first_weekday: int, future_weekdays: np.ndarray, weights: np.ndarray
) -> tuple[float, float, float]:
    factors = _weekday_factors(days, first_weekday)
    level = float(days[-7:].mean())
    mean = float((level * factors[future_weekdays] * weights).sum())
    horizon_weeks = weights.sum() / 7
    # Spread of week-to-week changes (or of days, scaled to weeks, with under three weeks).
    weekly = days[len(days) % 7 :].reshape(-1, 7).sum(axis=1)
    if len(weekly) >= 3:
        changes = np.diff(np.log(weekly + 1e-9 + 0.01 * weekly.mean()))
        relative = float(np.std(changes, ddof=1)) if len(changes) > 1 else 0.3
    else:
        relative = float(np.std(days[-7:] / max(level, 1e-12), ddof=1)) / math.sqrt(7) * 2
    # The level is uncertain by one week's spread, which compounds over the weeks still to come.
    spread = max(relative, 0.1) * math.sqrt(max(horizon_weeks, 1.0))
    return mean, mean * math.exp(-_Z80 * spread), mean * math.exp(_Z80 * spread)


def _run_rate(days: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    level = float(days.mean())
    mean = level * float(weights.sum())
    spread = float(np.std(np.log(days + 0.1 * level + 1e-12), ddof=1)) if len(days) >= 3 else 0.5
    spread = max(spread, 0.3) * math.sqrt(max(weights.sum() / 7, 1.0))
    return mean, mean * math.exp(-_Z80 * spread), mean * math.exp(_Z80 * spread)
