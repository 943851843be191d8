import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chargeback.services import IngestResult, usage_records_ingest
from chargeback.usage_import import batched, usage_file_records
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Import usage records from a JSONL/NDJSON or CSV file (optionally gzipped) through the ingestion "
        "service. Streams in constant memory; importing the same file again changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--tenant", help="Tenant slug for records that name none.")
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--show-errors", type=int, default=20, help="How many record errors to print.")

    def handle(self, *args, file: Path, tenant, batch_size, show_errors, **options):
        if not file.is_file():
            raise CommandError(f"No such file: {file}")
        default_tenant_id = None
        if tenant:
            default_tenant_id = Tenant.objects.filter(slug=tenant).values_list("id", flat=True).first()
            if default_tenant_id is None:
                raise CommandError(f"No tenant with slug {tenant!r}.")
        total = IngestResult()
        seen = 0
        started = time.monotonic()
        progress = sys.stderr.isatty() or options.get("verbosity", 1) > 1
        for batch in batched(usage_file_records(file), batch_size):
            result = usage_records_ingest(
                items=batch, scope_tenant_ids=None, default_tenant_id=default_tenant_id, source="import"
            )
            # Keep only the first errors: a bad file must not grow memory without bound.
            if len(total.errors) >= show_errors:
                result.errors = []
            total.merge(result, index_offset=seen)
            del total.errors[show_errors:]
            seen += len(batch)
            if progress:
                rate = seen / max(time.monotonic() - started, 1e-9)
                self.stderr.write(f"\r{seen:,} records read, {rate:,.0f}/s", ending="")
        if progress:
            self.stderr.write("")
        elapsed = time.monotonic() - started
        for error in total.errors:
            self.stderr.write(
                f"record {error['index'] + 1}: {error['code']}: {error['message']} (event_id={error['event_id']})"
            )
        self.stdout.write(
            f"{seen:,} records in {elapsed:.1f}s: {total.accepted:,} accepted, {total.duplicates:,} duplicates, "
            f"{total.conflicts:,} conflicts, {total.rejected:,} rejected, {total.unpriced:,} unpriced"
        )
