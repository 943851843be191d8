"""Anomaly detection, evaluated: the seasonal detector against the rolling 3-sigma z-score.

What it measures
    A labelled synthetic benchmark of spend-like series, hourly (8 weeks) and daily (26 weeks), each
    run through `insights.detection.detect` causally (a verdict uses only earlier points), once with
    our seasonal detector and once with the rolling z-score (previous 168 hours or 30 days, 3 sigma).
    Printed per anomaly type and overall, per granularity and pooled:

    - event precision: alert events (runs of flagged points, merged across gaps of up to 3 hours or
      1 day, as the service merges them into one anomaly) that overlap a labelled anomaly, over all
      alert events on the series of that type;
    - recall: labelled anomalies with at least one alert inside them (or within 2 hours / 1 day
      after their end), over all labelled anomalies;
    - F1 of the two;
    - detection delay: from an anomaly's start to its first alert, median, in hours;
    - false alerts per tenant-month: alert events that match no anomaly, per 30 days of series;
    - dollars caught: the share of the anomalies' excess dollars (|actual - what it would have been|)
      that lies in detected anomalies.

    Alerts in a short grace period after a lasting anomaly (level shift, drift: as long as its
    labelled window) count neither way: the new level is being learned.

Series (a "tenant" each)
    Expected spend = base x weekday factor (weekends 25-100 % of weekdays, Mondays up to 30 %
    higher: the normal Monday peak) x hour-of-day curve (nights 5-60 % of the peak, the peak hour
    shifted by the tenant's zone) x growth (-15 % to +50 % a month). Spend is made of requests:
    a Poisson number of calls at a log-uniform price per call ($0.001-$0.50), with day-level and
    hour-level multiplicative noise, so small tenants are zero-heavy and sparse by construction.
    One in five tenants is new: no usage before a random day. Base spend is log-normal around $50 a
    day ($2 to $1,000 in the bulk).

Anomalies (injected into the expected spend, so that the same noise applies)
    spike: x2-x10 for 1-4 hours (hourly) or 1 day (daily);
    level_shift: x2-x4 up (three in four) or x0.25-x0.5 down, lasting; labelled for 3 days / 14 days;
    drift: a ramp to x2-x3.5 over 2-5 days / 10-21 days, then lasting; labelled for the ramp and half
      as long again;
    drop: spend falls to zero for 6-36 hours / 2-4 days (an integration broke, or a runaway loop was
      killed).
    Each anomalous tenant carries one to three anomalies of one type, after at least 2 weeks (hourly)
    or 6 weeks (daily) of history; "none" tenants carry none (they measure false alerts only).

Targets: overall F1 >= 0.8 and >= 0.3 above the rolling z-score; under 1 false alert per tenant-month.

    .venv/bin/python bench/anomaly_eval.py                 # 40 tenants per type and granularity
    .venv/bin/python bench/anomaly_eval.py --tenants 10    # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from insights.detection import DAY, HOUR, METHOD_SEASONAL, METHOD_ZSCORE, detect  # noqa: E402

TYPES = ("spike", "level_shift", "drift", "drop", "none")
LENGTH_DAYS = {HOUR: 56, DAY: 182}
MERGE_GAP = {HOUR: 3, DAY: 1}
TOLERANCE = {HOUR: 2, DAY: 1}
FIRST_ANOMALY_DAY = {HOUR: 14, DAY: 42}
HOURS_PER_POINT = {HOUR: 1, DAY: 24}


@dataclass
class Event:
    kind: str
    start: int
    end: int  # exclusive: the labelled window
    grace_end: int  # alerts in [end + tolerance, grace_end) count neither way
    excess: float = 0.0


@dataclass
class Series:
    granularity: str
    kind: str
    values: np.ndarray
    phase: int
    events: list[Event] = field(default_factory=list)


def _hour_curve(rng: np.random.Generator) -> np.ndarray:
    night = rng.uniform(0.05, 0.6)
    hours = np.arange(24)
    peak = 14 + rng.integers(-3, 4)
    curve = night + (1 - night) * np.exp(-0.5 * ((hours - peak) / rng.uniform(2.5, 4.5)) ** 2)
    return np.roll(curve / curve.mean(), int(rng.integers(0, 24)))


def _multiplier(kind: str, granularity: str, rng: np.random.Generator, count: int, start: int):
    """The anomaly's factor on expected spend from `start`, and its labelled and grace windows."""
    factor = np.ones(count)
    per_day = 24 if granularity == HOUR else 1
    if kind == "spike":
        length = int(rng.integers(1, 5)) if granularity == HOUR else 1
        factor[start : start + length] = rng.uniform(2, 10)
        return factor, start + length, start + length
    if kind == "drop":
        length = int(rng.integers(6, 37)) if granularity == HOUR else int(rng.integers(2, 5))
        factor[start : start + length] = 0.0
        return factor, start + length, start + length
    if kind == "level_shift":
        size = rng.uniform(2, 4) if rng.random() < 0.75 else rng.uniform(0.25, 0.5)
        factor[start:] = size
        label = 3 * per_day if granularity == HOUR else 14
        return factor, start + label, start + 2 * label
    # drift
    ramp = int(rng.integers(2, 6) * per_day) if granularity == HOUR else int(rng.integers(10, 22))
    size = rng.uniform(2, 3.5)
    factor[start : start + ramp] = np.linspace(1, size, ramp, endpoint=False)
    factor[start + ramp :] = size
    label = ramp + ramp // 2
    return factor, start + label, start + label + ramp


def make_series(granularity: str, kind: str, rng: np.random.Generator) -> Series:
    days = LENGTH_DAYS[granularity]
    per_day = 24 if granularity == HOUR else 1
    count = days * per_day
    start_weekday = int(rng.integers(0, 7))
    day_index = np.arange(count) // per_day
    weekday = (day_index + start_weekday) % 7
    weekend = rng.uniform(0.25, 1.0)
    monday = rng.uniform(1.0, 1.3)
    weekday_factor = np.where(weekday >= 5, weekend, 1.0) * np.where(weekday == 0, monday, 1.0)
    growth = (1 + rng.uniform(-0.15, 0.5)) ** (day_index / 30)
    base = float(np.exp(rng.normal(np.log(50), 1.3)))
    expected = base * weekday_factor * growth / per_day
    if granularity == HOUR:
        expected = expected * _hour_curve(rng)[np.arange(count) % 24]
    expected *= np.exp(rng.normal(0, rng.uniform(0.03, 0.2), days))[day_index]
    if rng.random() < 0.2:  # a new tenant: nothing before its first day
        expected[: int(rng.integers(3, days // 3)) * per_day] = 0.0

    events: list[Event] = []
    multiplier = np.ones(count)
    if kind != "none":
        position = FIRST_ANOMALY_DAY[granularity] * per_day + int(rng.integers(0, 7 * per_day))
        for _ in range(int(rng.integers(1, 4))):
            if position >= count - 3 * per_day or expected[position] == 0:
                break
            factor, end, grace_end = _multiplier(kind, granularity, rng, count, position)
            multiplier *= factor
            events.append(Event(kind, position, min(end, count), min(grace_end, count)))
            if kind in ("level_shift", "drift"):
                break  # lasting: one per tenant
            position = end + int(rng.integers(7, 21) * per_day)

    price = float(np.exp(rng.uniform(np.log(0.001), np.log(0.5))))
    noise = np.exp(rng.normal(0, rng.uniform(0.05, 0.25), count))
    clean = rng.poisson(expected * noise / price) * price
    actual = rng.poisson(expected * multiplier * noise / price) * price
    # Where nothing was injected the anomalous series is the clean one, draw for draw.
    actual = np.where(multiplier == 1.0, clean, actual)
    for event in events:
        event.excess = float(np.abs(actual - clean)[event.start : event.end].sum())
    phase = start_weekday * 24 if granularity == HOUR else start_weekday
    return Series(granularity, kind, actual, phase, events)


def alert_events(flags: np.ndarray, merge_gap: int) -> list[tuple[int, int]]:
    """Runs of flagged points [start, end), merged across gaps of up to `merge_gap` points."""
    runs: list[list[int]] = []
    for index in np.flatnonzero(flags):
        if runs and index - runs[-1][1] <= merge_gap:
            runs[-1][1] = int(index) + 1
        else:
            runs.append([int(index), int(index) + 1])
    return [(start, end) for start, end in runs]


@dataclass
class Tally:
    events: int = 0
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    false_alerts: int = 0
    months: float = 0.0
    delays_hours: list[float] = field(default_factory=list)
    excess: float = 0.0
    excess_caught: float = 0.0

    def add(self, other: Tally) -> None:
        for name in ("events", "detected", "alerts", "true_alerts", "false_alerts", "months", "excess"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.excess_caught += other.excess_caught
        self.delays_hours.extend(other.delays_hours)

    @property
    def precision(self) -> float | None:
        return self.true_alerts / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.events if self.events else None

    @property
    def f1(self) -> float | None:
        precision, recall = self.precision, self.recall
        if precision is None or recall is None:
            return None
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def score_series(series: Series, flags: np.ndarray) -> Tally:
    granularity = series.granularity
    tolerance = TOLERANCE[granularity]
    tally = Tally(events=len(series.events), months=len(series.values) / HOURS_PER_POINT[DAY] * 0 + 0)
    tally.months = len(series.values) * HOURS_PER_POINT[granularity] / 24 / 30
    alerts = alert_events(flags, MERGE_GAP[granularity])
    matched_events = set()
    for start, end in alerts:
        hit = [
            index
            for index, event in enumerate(series.events)
            if start < event.end + tolerance and end > event.start
        ]
        if hit:
            tally.alerts += 1
            tally.true_alerts += 1
            matched_events.update(hit)
            continue
        if any(event.end + tolerance <= start < event.grace_end for event in series.events):
            continue  # learning a lasting change: neither right nor wrong
        tally.alerts += 1
        tally.false_alerts += 1
    for index, event in enumerate(series.events):
        tally.excess += event.excess
        if index not in matched_events:
            continue
        tally.detected += 1
        tally.excess_caught += event.excess
        inside = np.flatnonzero(flags[event.start : event.end + tolerance])
        if len(inside):
            tally.delays_hours.append(float(inside[0]) * HOURS_PER_POINT[granularity])
    return tally


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(title: str, tallies: dict[str, Tally]) -> None:
    print(f"\n{title}")
    print(
        f"  {'type':<12} {'events':>6} {'precision':>9} {'recall':>7} {'F1':>5} "
        f"{'delay h (median)':>16} {'false/tenant-month':>18} {'$ caught':>8}"
    )
    for kind, tally in tallies.items():
        delay = float(np.median(tally.delays_hours)) if tally.delays_hours else None
        caught = tally.excess_caught / tally.excess if tally.excess else None
        print(
            f"  {kind:<12} {tally.events:>6} {_fmt(tally.precision):>9} {_fmt(tally.recall):>7} "
            f"{_fmt(tally.f1):>5} {_fmt(delay, 1):>16} {tally.false_alerts / tally.months:>18.2f} "
            f"{_fmt(caught):>8}"
        )


def evaluate(tenants: int, seed: int) -> dict[str, dict[str, dict[str, Tally]]]:
    rng = np.random.default_rng(seed)
    results: dict[str, dict[str, dict[str, Tally]]] = {}
    for method in (METHOD_SEASONAL, METHOD_ZSCORE):
        results[method] = {granularity: {kind: Tally() for kind in TYPES} for granularity in (HOUR, DAY)}
    for granularity in (HOUR, DAY):
        for kind in TYPES:
            for _ in range(tenants):
                series = make_series(granularity, kind, rng)
                for method in (METHOD_SEASONAL, METHOD_ZSCORE):
                    result = detect(series.values, granularity=granularity, method=method, phase=series.phase)
                    results[method][granularity][kind].add(score_series(series, result.is_anomaly))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=40, help="Tenants per type and granularity.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    results = evaluate(args.tenants, args.seed)
    overall: dict[str, Tally] = {}
    for method, names in (
        (METHOD_SEASONAL, "seasonal detector"),
        (METHOD_ZSCORE, "rolling z-score, 3 sigma"),
    ):
        pooled = {kind: Tally() for kind in TYPES}
        for granularity in (HOUR, DAY):
            tallies = results[method][granularity]
            total = Tally()
            for kind, tally in tallies.items():
                total.add(tally)
                pooled[kind].add(tally)
            report(
                f"{names}: {'hourly' if granularity == HOUR else 'daily'} series",
                {**tallies, "overall": total},
            )
        total = Tally()
        for tally in pooled.values():
            total.add(tally)
        overall[method] = total
        report(f"{names}: hourly and daily pooled", {**pooled, "overall": total})

    ours, baseline = overall[METHOD_SEASONAL], overall[METHOD_ZSCORE]
    false_rate = ours.false_alerts / ours.months
    print(
        f"\nOverall F1: seasonal {ours.f1:.3f}, rolling z-score {baseline.f1:.3f} "
        f"(difference {ours.f1 - baseline.f1:+.3f}); seasonal false alerts per tenant-month {false_rate:.2f}"
    )
    passed = ours.f1 >= 0.8 and ours.f1 - baseline.f1 >= 0.3 and false_rate < 1
    print(
        f"Targets (F1 >= 0.8, >= 0.3 above z-score, < 1 false alert per tenant-month): {'met' if passed else 'NOT met'}"
    )
    print(
        f"({args.tenants} tenants per type and granularity, seed {args.seed}, {time.perf_counter() - started:.0f} s)"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
