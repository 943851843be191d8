import csv
from datetime import datetime, timedelta

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from insights.detection import GRANULARITIES, HOUR, METHOD_SEASONAL, METHODS, ZSCORE_SIGMA, detect
from insights.management.commands._csv import read_series


def regular_series(rows: list[tuple[datetime, float]], granularity: str) -> tuple[list[datetime], np.ndarray]:
    """Sum rows into consecutive UTC hours or days from the first to the last; missing ones are 0."""
    step = timedelta(hours=1) if granularity == HOUR else timedelta(days=1)

    def bucket(moment: datetime) -> datetime:
        moment = moment.replace(minute=0, second=0, microsecond=0)
        return moment if granularity == HOUR else moment.replace(hour=0)

    sums: dict[datetime, float] = {}
    for moment, value in rows:
        key = bucket(moment)
        sums[key] = sums.get(key, 0.0) + value
    first, last = min(sums), max(sums)
    count = int((last - first) / step) + 1
    starts = [first + index * step for index in range(count)]
    return starts, np.array([sums.get(start, 0.0) for start in starts])


class Command(BaseCommand):
    help = (
        "Run the anomaly detector over a `timestamp,value` CSV (values summed per UTC hour or day) and "
        "write `timestamp,value,expected,score,is_anomaly`. Causal: each verdict uses earlier points only."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV with a header naming `timestamp` and `value`.")
        parser.add_argument("--granularity", required=True, choices=GRANULARITIES)
        parser.add_argument("--method", default=METHOD_SEASONAL, choices=METHODS)
        parser.add_argument(
            "--sigma", type=float, default=ZSCORE_SIGMA, help="z-score method: alert threshold."
        )
        parser.add_argument(
            "--window", type=int, help="z-score method: trailing points (default a week / 30 days)."
        )
        parser.add_argument("--output", help="Write here instead of standard output.")

    def handle(self, *args, file, granularity, method, sigma, window, output, **options):
        if window is not None and window < 2:
            raise CommandError("--window must be at least 2.")
        starts, values = regular_series(read_series(file), granularity)
        phase = starts[0].weekday() * 24 + starts[0].hour if granularity == HOUR else starts[0].weekday()
        result = detect(
            values, granularity=granularity, method=method, phase=phase, sigma=sigma, window=window
        )
        handle = open(output, "w", newline="") if output else self.stdout  # noqa: SIM115 (stdout stays open)
        try:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["timestamp", "value", "expected", "score", "is_anomaly"])
            for index, start in enumerate(starts):
                expected = result.expected[index]
                writer.writerow(
                    [
                        start.isoformat().replace("+00:00", "Z")
                        if granularity == HOUR
                        else start.date().isoformat(),
                        _number(values[index]),
                        "" if np.isnan(expected) else _number(expected),
                        f"{result.score[index]:.3f}",
                        int(result.is_anomaly[index]),
                    ]
                )
        finally:
            if output:
                handle.close()
        if output:
            self.stderr.write(
                f"{int(result.is_anomaly.sum())} anomalous {granularity}s of {len(starts)} written to {output}"
            )


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
