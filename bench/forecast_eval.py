"""Month-end forecasts, backtested: our forecast against the run rate, at day 7, 14 and 21.

What it measures
    For synthetic daily spend histories, the forecast of a calendar month's total made after d
    complete days of the month (d = 7, 14, 21), by `insights.forecasting.forecast_period` (the code
    the service runs) and by the run rate (spend so far x days in month / d). Printed per day:

    - WAPE: sum of |forecast - actual month total| over sum of actual month totals;
    - coverage: the share of months whose actual total fell inside our 80 % interval (the run rate
      has no interval);
    - the same split by the method our forecast chose (ETS with four weeks of history or more,
      simpler methods before).

Histories (a "tenant" each)
    Daily spend = base (log-normal around $50) x weekday factor (weekends 25-100 % of weekdays,
    Mondays up to 30 % higher) x growth (-15 % to +50 % a month, for some tenants slowing down or
    speeding up over time) x multiplicative noise (5-30 % a day), with occasional one-day spikes
    (x2-x5, 1 % of days) and, for one tenant in five, a lasting level change (x0.5-x2) at a random
    day. Tenants have 45 to 400 days of history; each is backtested on its last three whole
    months that start after its first spend, so young tenants exercise the fallbacks.

Target: WAPE at day 7 at most 0.7 x the run rate's; coverage between 70 % and 90 %.

    .venv/bin/python bench/forecast_eval.py                 # 200 tenants
    .venv/bin/python bench/forecast_eval.py --tenants 50    # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from insights.forecasting import forecast_period  # noqa: E402

FORECAST_DAYS = (7, 14, 21)
END = date(2026, 10, 31)


def make_history(rng: np.random.Generator) -> tuple[date, np.ndarray]:
    """(first day, daily spend up to END inclusive) for one tenant."""
    length = int(rng.integers(45, 401))
    first = END - timedelta(days=length - 1)
    index = np.arange(length)
    weekdays = (first.weekday() + index) % 7
    weekday_factor = np.where(weekdays >= 5, rng.uniform(0.25, 1.0), 1.0) * np.where(
        weekdays == 0, rng.uniform(1.0, 1.3), 1.0
    )
    monthly_growth = rng.uniform(-0.15, 0.5)
    change = rng.uniform(-0.3, 0.3) if rng.random() < 0.3 else 0.0  # growth slowing or speeding up
    growth_rate = np.log1p(monthly_growth) / 30 * (1 + change * index / length)
    growth = np.exp(np.cumsum(growth_rate))
    base = float(np.exp(rng.normal(np.log(50), 1.2)))
    level = np.ones(length)
    if rng.random() < 0.2:
        level[int(rng.integers(length // 4, length)) :] = rng.uniform(0.5, 2.0)
    noise = np.exp(rng.normal(0, rng.uniform(0.05, 0.3), length))
    spikes = np.where(rng.random(length) < 0.01, rng.uniform(2, 5, length), 1.0)
    return first, base * weekday_factor * growth * level * noise * spikes


def month_starts(first: date) -> list[date]:
    """The last three whole months of the history that start on or after its first day."""
    starts = []
    month = date(END.year, END.month, 1)
    while len(starts) < 3:
        if month < first:
            break
        starts.append(month)
        month = date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)
    return starts


def days_in_month(start: date) -> int:
    following = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return (following - start).days


def evaluate(tenants: int, seed: int):
    rng = np.random.default_rng(seed)
    # (day, method) -> list of (actual, ours, lower, upper, run rate)
    results: dict[int, list[tuple]] = defaultdict(list)
    for tenant in range(tenants):
        first, spend = make_history(rng)
        for start in month_starts(first):
            offset = (start - first).days
            length = days_in_month(start)
            actual = float(spend[offset : offset + length].sum())
            for elapsed in FORECAST_DAYS:
                history = spend[: offset + elapsed]
                observed = float(spend[offset : offset + elapsed].sum())
                forecast = forecast_period(
                    history,
                    observed=observed,
                    remaining_days=length - elapsed,
                    first_weekday=first.weekday(),
                    seed=tenant,
                )
                run_rate = observed * length / elapsed
                results[elapsed].append(
                    (actual, forecast.total, forecast.lower, forecast.upper, run_rate, forecast.method)
                )
    return results


def summarise(rows: list[tuple]) -> tuple[float, float, float, int]:
    actual = np.array([row[0] for row in rows])
    ours = np.array([row[1] for row in rows])
    lower = np.array([row[2] for row in rows])
    upper = np.array([row[3] for row in rows])
    run_rate = np.array([row[4] for row in rows])
    wape = float(np.abs(ours - actual).sum() / actual.sum())
    baseline = float(np.abs(run_rate - actual).sum() / actual.sum())
    coverage = float(np.mean((actual >= lower) & (actual <= upper)))
    return wape, baseline, coverage, len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = evaluate(args.tenants, args.seed)

    print(
        f"{'day':>4} {'method':<14} {'months':>6} {'WAPE ours':>9} {'WAPE run rate':>13} {'ratio':>6} {'80% coverage':>12}"
    )
    passed = True
    for elapsed in FORECAST_DAYS:
        rows = results[elapsed]
        groups = {"all": rows}
        for method in sorted({row[5] for row in rows}):
            groups[method] = [row for row in rows if row[5] == method]
        for name, group in groups.items():
            wape, baseline, coverage, count = summarise(group)
            print(
                f"{elapsed:>4} {name:<14} {count:>6} {wape:>9.3f} {baseline:>13.3f} "
                f"{wape / baseline:>6.2f} {coverage:>11.0%}"
            )
        wape, baseline, coverage, _ = summarise(rows)
        if elapsed == 7:
            passed &= wape <= 0.7 * baseline
        passed &= 0.7 <= coverage <= 0.9
    print(
        f"Targets (WAPE at day 7 <= 0.7 x run rate's; coverage 70-90 % at each day): {'met' if passed else 'NOT met'}"
    )
    print(f"({args.tenants} tenants, seed {args.seed}, {time.perf_counter() - started:.0f} s)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
