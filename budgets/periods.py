"""Budget periods as keys: spend is always "spend in the period that contains now", so nothing
ever has to be reset. Periods are the tenant's calendar (its IANA zone, DST included)."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

from budgets.models import Budget
from chargeback.calendar import add_months, local_date, local_midnight


@dataclass(frozen=True)
class Period:
    key: str
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def elapsed_fraction(self, now: datetime) -> float:
        total = (self.end - self.start).total_seconds()
        return min(max((now - self.start).total_seconds() / total, 0.0), 1.0)


def budget_period(budget: Budget, at: datetime, time_zone: str) -> Period:
    """The period of `budget` that contains `at`, in `time_zone` (the budget tenant's zone)."""
    if budget.period == Budget.Period.FIXED:
        return Period(f"fixed-{budget.fixed_start:%Y%m%dT%H%M}", budget.fixed_start, budget.fixed_end)
    return _calendar_period(budget.period, budget.week_start, local_date(at, time_zone), time_zone)


@lru_cache(maxsize=4096)
def _calendar_period(period: str, week_start: int, day: date, time_zone: str) -> Period:
    """The calendar period of kind `period` containing the local `day`. A pure function of its
    arguments, cached: the allowance check asks for the same few periods on every call."""
    if period == Budget.Period.DAY:
        first, after, key = day, day + timedelta(days=1), day.isoformat()
    elif period == Budget.Period.WEEK:
        first = day - timedelta(days=(day.weekday() - week_start) % 7)
        after, key = first + timedelta(days=7), f"week-{first.isoformat()}"
    elif period == Budget.Period.MONTH:
        first = day.replace(day=1)
        after, key = add_months(first, 1), f"{first:%Y-%m}"
    elif period == Budget.Period.QUARTER:
        first = day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
        after, key = add_months(first, 3), f"{first.year}-Q{(first.month - 1) // 3 + 1}"
    else:
        raise ValueError(f"unknown budget period {period!r}")
    return Period(key, local_midnight(first, time_zone), local_midnight(after, time_zone))
