import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from insights.models import Anomaly
from tests.factories import TenantFactory
from tests.insights.series import daily_series, hourly_series


def write_csv(path, rows) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value"])
        writer.writerows(rows)
    return str(path)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_detect_anomalies_csv_daily(tmp_path):
    first = date(2026, 6, 1)  # a Monday
    values = daily_series(120)
    values[100] *= 5
    path = write_csv(
        tmp_path / "daily.csv",
        [((first + timedelta(days=day)).isoformat(), f"{value:.4f}") for day, value in enumerate(values)],
    )
    rows = list(csv.DictReader(io.StringIO(run("detect_anomalies_csv", path, "--granularity", "day"))))
    assert list(rows[0]) == ["timestamp", "value", "expected", "score", "is_anomaly"]
    assert len(rows) == 120
    assert [row["timestamp"] for row in rows if row["is_anomaly"] == "1"] == [
        (first + timedelta(days=100)).isoformat()
    ]
    assert rows[0]["expected"] == ""  # no verdict before ten days of history
    assert float(rows[100]["expected"]) == pytest.approx(values[100] / 5, rel=0.25)


def test_detect_anomalies_csv_hourly_sums_rows_fills_gaps_and_compares_methods(tmp_path):
    values = hourly_series(35)
    values[30 * 24 + 14] *= 6
    rows = []
    for hour, value in enumerate(values):
        if hour % 50 == 7:
            continue  # a missing hour counts as zero spend
        moment = datetime(2026, 6, 1, tzinfo=UTC) + timedelta(hours=hour)
        rows.append(((moment + timedelta(minutes=5)).isoformat(), f"{value / 2:.5f}"))
        rows.append(((moment + timedelta(minutes=35)).isoformat().replace("+00:00", "Z"), f"{value / 2:.5f}"))
    path = write_csv(tmp_path / "hourly.csv", rows)
    output = tmp_path / "verdicts.csv"
    call_command(
        "detect_anomalies_csv", path, "--granularity", "hour", "--output", str(output), stderr=io.StringIO()
    )
    verdicts = list(csv.DictReader(output.open()))
    assert len(verdicts) == 35 * 24
    assert verdicts[7]["value"] == "0"
    flagged = [row["timestamp"] for row in verdicts if row["is_anomaly"] == "1"]
    assert "2026-07-01T14:00:00Z" in flagged
    zscore = list(
        csv.DictReader(
            io.StringIO(run("detect_anomalies_csv", path, "--granularity", "hour", "--method", "zscore"))
        )
    )
    assert len(zscore) == len(verdicts)


def test_detect_anomalies_csv_rejects_bad_files(tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        run("detect_anomalies_csv", str(tmp_path / "missing.csv"), "--granularity", "day")
    bad = tmp_path / "bad.csv"
    bad.write_text("time,amount\n2026-01-01,1\n")
    with pytest.raises(CommandError, match="timestamp and value"):
        run("detect_anomalies_csv", str(bad), "--granularity", "day")
    negative = write_csv(tmp_path / "negative.csv", [("2026-01-01", "-1")])
    with pytest.raises(CommandError, match="not negative"):
        run("detect_anomalies_csv", negative, "--granularity", "day")


def test_forecast_csv_prints_the_total_and_interval(tmp_path):
    first = date(2026, 6, 1)
    values = daily_series(150, noise=0.05)  # through 2026-10-28
    path = write_csv(
        tmp_path / "spend.csv",
        [((first + timedelta(days=day)).isoformat(), f"{value:.4f}") for day, value in enumerate(values)],
    )
    output = run("forecast_csv", path, "--period-end", "2026-11-01")
    lines = dict(line.split(": ", 1) for line in output.strip().splitlines())
    assert lines["period"] == "2026-10-01 to 2026-11-01 (exclusive)"
    observed = sum(values[122:])
    assert float(lines["observed so far"].split()[0]) == pytest.approx(observed, abs=0.01)
    total = float(lines["forecast total"])
    lower, upper = (float(part) for part in lines["80% interval"].split(" to "))
    assert lower < total < upper
    expected_rest = daily_series(153, noise=0.05)[150:].sum()
    assert total == pytest.approx(observed + expected_rest, rel=0.05)
    assert lines["method"].startswith("ets")
    with pytest.raises(CommandError, match="already covers"):
        run("forecast_csv", path, "--period-end", "2026-10-15")


@pytest.mark.django_db
def test_detect_anomalies_command(ingest):
    from tests.insights.conftest import NOW, hourly_usage, record

    TenantFactory(slug="team")
    ingest(hourly_usage("team", days=30, end=NOW, features={"chat": 2.0}))
    last_hour = NOW.replace(minute=0) - timedelta(hours=1)
    ingest([record("team", last_hour + timedelta(minutes=minute), 20.0) for minute in (1, 2)])
    with pytest.raises(CommandError, match="No tenant"):
        run("detect_anomalies", "--tenant", "nobody")
    output = run("detect_anomalies", "--tenant", "team")
    assert "series checked" in output
    assert output.endswith("resolved.\n")
    assert Anomaly.objects.filter(tenant__slug="team", granularity="hour", dimension="total").exists()
