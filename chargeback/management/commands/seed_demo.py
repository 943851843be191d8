import sys
import time

from django.core.management.base import BaseCommand, CommandError

from chargeback.demo import ADMIN_PASSWORD_FILE, API_KEY_FILE, SeedReport, seed_demo


class Command(BaseCommand):
    help = (
        "Create the demo organisation (acme-corp with teams, customers and projects), several weeks of "
        "realistic usage ending at the current hour, a superuser 'admin' and a global API key. "
        "Idempotent: a second run changes nothing, a later one only adds the hours since."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=28, help="Days of usage to seed (default 28).")
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="Server address used in the printed examples."
        )

    def handle(self, *args, days: int, base_url: str, **options):
        if days < 1:
            raise CommandError("--days must be at least 1.")
        started = time.monotonic()
        show_progress = sys.stderr.isatty() or options.get("verbosity", 1) > 1

        def progress(report: SeedReport) -> None:
            if show_progress:
                rate = report.records_generated / max(time.monotonic() - started, 1e-9)
                self.stderr.write(f"\r{report.records_generated:,} usage records, {rate:,.0f}/s", ending="")

        self.stdout.write(f"Seeding the demo ({days} days of usage)…")
        report = seed_demo(days=days, progress=progress)
        if show_progress:
            self.stderr.write("")
        elapsed = time.monotonic() - started
        usage = report.usage
        created = ", ".join(report.tenants_created) if report.tenants_created else "none (all exist)"
        self.stdout.write(f"Tenants created: {created}")
        self.stdout.write(
            f"Usage {report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC: "
            f"{report.records_generated:,} records, {usage.accepted:,} new, {usage.duplicates:,} already there, "
            f"{usage.conflicts:,} conflicts, {usage.rejected:,} rejected, {usage.unpriced:,} new unpriced "
            f"({elapsed:.1f}s)"
        )
        for error in usage.errors:
            self.stderr.write(f"  {error['event_id']}: {error['code']}: {error['message']}")
        for note in report.notes:
            self.stdout.write(note)

        base = base_url.rstrip("/")
        if report.admin_password:
            password = report.admin_password
        else:
            password = f"(unchanged; not in var/{ADMIN_PASSWORD_FILE}: manage.py changepassword admin)"
        key = report.api_key
        example = (
            f'[{{"event_id": "example-{report.end:%Y%m%d%H}", "timestamp": "{report.end:%Y-%m-%dT%H:%M:%SZ}", '
            '"tenant": "search", "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1200, '
            '"output_tokens": 300, "tags": {"feature": "search-summary"}}]'
        )
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"Admin:   {base}/admin/  user {report.admin_username}  password {password}",
                    f"API key: {key}   (global; scopes ingest, read, admin; kept in var/{API_KEY_FILE})",
                    "",
                    "Try:",
                    f"  curl -s -H 'Authorization: Bearer {key}' '{base}/api/v1/usage/?tenant=globex'",
                    f"  curl -s -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
                    f"    '{base}/api/v1/usage/' -d '{example}'",
                    "",
                ]
            )
        )
