import numpy as np
import pytest

from insights.detection import DAY, HOUR, METHOD_ZSCORE, RULE_CUSUM, detect
from tests.insights.series import daily_series, hourly_series


def flagged(result) -> list[int]:
    return [int(index) for index in np.flatnonzero(result.is_anomaly)]


def test_a_spike_on_a_seasonal_daily_series_is_found_on_its_day():
    values = daily_series(120)
    values[100] *= 4
    result = detect(values, granularity=DAY)
    assert flagged(result) == [100]
    assert result.expected[100] == pytest.approx(values[100] / 4, rel=0.25)
    assert result.score[100] > 4


def test_a_spike_on_an_hourly_series_is_found_within_the_hour():
    values = hourly_series(35)
    spike_hour = 30 * 24 + 14  # a Wednesday afternoon
    values[spike_hour] *= 5
    result = detect(values, granularity=HOUR)
    assert spike_hour in flagged(result)
    assert all(abs(index - spike_hour) <= 3 for index in flagged(result))


def test_a_level_shift_is_found_and_later_accepted_as_the_new_normal():
    values = daily_series(150)
    values[100:] *= 2.5
    result = detect(values, granularity=DAY)
    assert result.is_anomaly[100]
    assert not result.is_anomaly[:100].any()
    # A lasting change is news once, not forever.
    assert not result.is_anomaly[130:].any()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_hourly_level_shift_with_quiet_nights_is_not_news_again_after_it_is_accepted(seed):
    values = hourly_series(56, seed=seed)
    change = 30 * 24 + 10  # a Wednesday morning: spend falls to 30 % and stays there
    values[change:] *= 0.3
    result = detect(values, granularity=HOUR)
    hits = flagged(result)
    assert hits and change <= hits[0] <= change + 3
    assert not result.is_anomaly[:change].any()
    # Quiet nights break the flagged run, so the change is accepted after a few days; the day-level
    # CUSUM must not keep the evidence it gathered against the old level and re-alert for weeks.
    assert not result.is_anomaly[46 * 24 :].any()


def test_a_slow_drift_is_found_by_the_cusum():
    values = daily_series(150, growth_per_day=0.0)
    values[100:121] *= np.linspace(1, 2.5, 21)  # +150 % over three weeks, then it stays
    values[121:] *= 2.5
    result = detect(values, granularity=DAY)
    hits = flagged(result)
    assert hits and 100 <= hits[0] <= 115
    assert not result.is_anomaly[:100].any()
    assert RULE_CUSUM in set(result.rule[result.is_anomaly].tolist())


def test_a_drop_to_zero_is_found():
    values = daily_series(120)
    values[100:103] = 0
    result = detect(values, granularity=DAY)
    assert flagged(result)[:3] == [100, 101, 102]
    assert result.score[100] < 0


def test_normal_monday_peaks_raise_nothing():
    values = daily_series(180)
    assert flagged(detect(values, granularity=DAY)) == []
    hourly = hourly_series(56)
    assert flagged(detect(hourly, granularity=HOUR)) == []


def test_a_new_tenants_first_days_raise_nothing():
    values = np.concatenate([np.zeros(60), daily_series(9, base=400, seed=3)])
    result = detect(values, granularity=DAY)
    assert flagged(result) == []
    assert np.isnan(result.expected).all()  # no verdict before ten days of history
    hourly = np.concatenate([np.zeros(24 * 20), hourly_series(3, seed=4)])
    assert flagged(detect(hourly, granularity=HOUR)) == []


def test_a_zero_heavy_series_raises_nothing():
    rng = np.random.default_rng(5)
    calls = rng.poisson(0.4, 56 * 24)  # a few calls a day, most hours none
    values = calls * 0.05
    assert (values == 0).mean() > 0.6
    assert flagged(detect(values, granularity=HOUR)) == []
    daily = rng.poisson(0.8, 150) * 3.0
    assert flagged(detect(daily, granularity=DAY)) == []


def test_verdicts_are_causal():
    values = daily_series(120)
    values[90] *= 4
    before = detect(values, granularity=DAY)
    changed = values.copy()
    changed[100:] *= 10  # the future changes...
    after = detect(changed, granularity=DAY)
    # ...and no verdict before it does.
    assert (before.is_anomaly[:100] == after.is_anomaly[:100]).all()
    assert np.allclose(np.nan_to_num(before.expected[:100]), np.nan_to_num(after.expected[:100]))


def test_past_anomalies_do_not_inflate_the_baseline():
    values = daily_series(140)
    values[100:103] *= 8  # a three-day runaway
    result = detect(values, granularity=DAY)
    # A week later the expected value is the normal one again, not pulled up by the runaway.
    assert result.expected[110] == pytest.approx(daily_series(140)[110], rel=0.25)
    assert not result.is_anomaly[104:].any()


def test_the_rolling_zscore_flags_beyond_sigma():
    values = np.full(60, 10.0) + np.tile([0.0, 1.0], 30)
    values[50] = 30
    result = detect(values, granularity=DAY, method=METHOD_ZSCORE, window=30, sigma=3)
    assert flagged(result) == [50]
    assert np.isnan(result.expected[:30]).all()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="negative"):
        detect([1, -1], granularity=DAY)
    with pytest.raises(ValueError, match="granularity"):
        detect([1, 2], granularity="week")
    with pytest.raises(ValueError, match="method"):
        detect([1, 2], granularity=DAY, method="magic")
