from datetime import UTC, datetime

import pytest

from budgets.models import Budget
from budgets.periods import budget_period


def _period(kind, at, zone, **fields):
    return budget_period(Budget(period=kind, **fields), at, zone)


def test_a_month_starts_at_local_midnight_on_the_first():
    # 23:30 UTC on 31 March is already April in Berlin (UTC+2 in summer time).
    period = _period("month", datetime(2026, 3, 31, 22, 30, tzinfo=UTC), "Europe/Berlin")
    assert period.key == "2026-04"
    assert period.start == datetime(2026, 3, 31, 22, tzinfo=UTC)
    assert period.end == datetime(2026, 4, 30, 22, tzinfo=UTC)
    before = _period("month", datetime(2026, 3, 31, 21, 59, 59, tzinfo=UTC), "Europe/Berlin")
    assert before.key == "2026-03"
    # March began in winter time (UTC+1) and ends in summer time: 743 hours, not 744.
    assert before.start == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert (before.end - before.start).total_seconds() == 743 * 3600


def test_a_day_across_the_dst_change_is_23_hours_long():
    period = _period("day", datetime(2026, 3, 8, 12, tzinfo=UTC), "America/New_York")
    assert period.key == "2026-03-08"
    assert period.start == datetime(2026, 3, 8, 5, tzinfo=UTC)
    assert period.end == datetime(2026, 3, 9, 4, tzinfo=UTC)


def test_weeks_start_on_the_configured_day():
    sunday_start = _period("week", datetime(2026, 11, 25, 12, tzinfo=UTC), "UTC", week_start=6)
    assert sunday_start.start == datetime(2026, 11, 22, tzinfo=UTC)
    assert sunday_start.end == datetime(2026, 11, 29, tzinfo=UTC)
    monday_start = _period("week", datetime(2026, 11, 25, 12, tzinfo=UTC), "UTC", week_start=0)
    assert monday_start.start == datetime(2026, 11, 23, tzinfo=UTC)


def test_quarters_and_a_half_hour_zone():
    period = _period("quarter", datetime(2026, 12, 31, 19, tzinfo=UTC), "Asia/Kolkata")
    # 19:00 UTC on 31 December is 00:30 on 1 January in India: the next quarter.
    assert period.key == "2027-Q1"
    assert period.start == datetime(2026, 12, 31, 18, 30, tzinfo=UTC)


def test_a_fixed_range_is_its_own_period():
    start, end = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 6, 15, tzinfo=UTC)
    period = _period("fixed", datetime(2026, 6, 3, tzinfo=UTC), "UTC", fixed_start=start, fixed_end=end)
    assert (period.start, period.end) == (start, end)
    assert period.contains(datetime(2026, 6, 14, 23, tzinfo=UTC))
    assert not period.contains(end)


@pytest.mark.parametrize("kind", ["day", "week", "month", "quarter"])
def test_consecutive_periods_tile_time(kind):
    at = datetime(2026, 10, 20, 12, tzinfo=UTC)
    first = _period(kind, at, "Europe/London")
    second = _period(kind, first.end, "Europe/London")
    assert second.start == first.end
    assert second.key != first.key
