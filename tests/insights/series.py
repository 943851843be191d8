"""Synthetic spend series for the insights tests: weekday and hour-of-day seasonality, growth, noise."""

import numpy as np

WEEKEND_FACTOR = 0.4
MONDAY_FACTOR = 1.3  # the normal Monday peak


def daily_series(
    days: int, *, base: float = 100.0, growth_per_day: float = 0.003, noise: float = 0.08, seed: int = 1
):
    """Daily spend starting on a Monday (phase 0)."""
    rng = np.random.default_rng(seed)
    index = np.arange(days)
    weekday = index % 7
    factor = np.where(weekday >= 5, WEEKEND_FACTOR, 1.0) * np.where(weekday == 0, MONDAY_FACTOR, 1.0)
    return base * factor * (1 + growth_per_day) ** index * np.exp(rng.normal(0, noise, days))


def hourly_series(days: int, *, base: float = 10.0, noise: float = 0.1, seed: int = 1):
    """Hourly spend starting on a Monday at 00:00 UTC (phase 0): busy working hours, quiet nights."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    hour_of_day = hours % 24
    weekday = (hours // 24) % 7
    daytime = 0.15 + 0.85 * np.exp(-0.5 * ((hour_of_day - 14) / 4) ** 2)
    weekday_factor = np.where(weekday >= 5, WEEKEND_FACTOR, 1.0) * np.where(weekday == 0, MONDAY_FACTOR, 1.0)
    day_noise = np.exp(rng.normal(0, 0.05, days))[hours // 24]
    return base * daytime * weekday_factor * day_noise * np.exp(rng.normal(0, noise, len(hours)))
