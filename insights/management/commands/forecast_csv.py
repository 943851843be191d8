from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from chargeback.calendar import month_start
from chargeback.management.commands._dates import parse_date
from insights.detection import DAY
from insights.forecasting import forecast_period
from insights.management.commands._csv import read_series
from insights.management.commands.detect_anomalies_csv import regular_series


class Command(BaseCommand):
    help = (
        "Forecast a period's total from a `timestamp,value` CSV of past spend (summed per UTC day; the "
        "last day in the file counts as complete) and print it with its 80 % interval."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV with a header naming `timestamp` and `value`.")
        parser.add_argument(
            "--period-end",
            required=True,
            help="First day after the period (exclusive), YYYY-MM-DD, e.g. 2026-12-01.",
        )
        parser.add_argument(
            "--period-start",
            help="First day of the period, YYYY-MM-DD (default: the month before --period-end).",
        )

    def handle(self, *args, file, period_end, period_start, **options):
        end = parse_date(period_end)
        start = parse_date(period_start) if period_start else month_start(end - timedelta(days=1))
        if start >= end:
            raise CommandError("The period must start before it ends.")
        starts, values = regular_series(read_series(file), DAY)
        days = [moment.date() for moment in starts]
        now = days[-1] + timedelta(days=1)
        if now >= end:
            raise CommandError(
                f"The data already covers the period (it runs to {days[-1]}): nothing to forecast."
            )
        observed = float(sum(value for day, value in zip(days, values, strict=True) if day >= start))
        result = forecast_period(
            values,
            observed=observed,
            remaining_days=(end - max(now, start)).days,
            first_weekday=days[0].weekday(),
        )
        self.stdout.write(f"period: {start} to {end} (exclusive)")
        self.stdout.write(f"observed so far: {observed:.2f} (through {days[-1]})")
        self.stdout.write(f"forecast total: {result.total:.2f}")
        self.stdout.write(f"80% interval: {result.lower:.2f} to {result.upper:.2f}")
        self.stdout.write(f"method: {result.method} ({result.history_days} days of history)")
