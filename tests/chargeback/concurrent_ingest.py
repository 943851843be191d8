"""The ingesting processes of tests/chargeback/test_concurrency.py.

    python -m tests.chargeback.concurrent_ingest FOLDER

FOLDER holds batches-<n>.json files, each a list of batches (lists of records) for one process.
This process sets Django up once (DJANGO_SETTINGS_MODULE and DATABASE_URL come from the test) and
forks one process per file (fork: eight interpreters setting Django up each would take most of
the test's time on a small machine). Each child opens its own database connection, waits until
all are connected so that their batches race, ingests its batches through the ingestion service,
and writes the service's answers to answers-<n>.json. Exits non-zero if any child failed.
"""

import json
import multiprocessing
import sys
import traceback
from pathlib import Path

import django


def _ingest(path: Path, start) -> None:
    from django.db import connection

    from chargeback.services import usage_records_ingest

    batches = [[json.dumps(record).encode() for record in batch] for batch in json.loads(path.read_text())]
    connection.ensure_connection()
    start.wait()
    answers = [usage_records_ingest(items=items, scope_tenant_ids=None).as_dict() for items in batches]
    path.with_name(path.name.replace("batches-", "answers-")).write_text(json.dumps(answers))


def _child(path: Path, start) -> None:
    try:
        _ingest(path, start)
    except BaseException:
        traceback.print_exc()
        start.abort()  # no sibling waits forever for this one
        sys.exit(1)


def main() -> int:
    django.setup()  # no connection is opened here: each child opens its own
    import chargeback.services  # noqa: F401  (imported once, before the fork)

    paths = sorted(Path(sys.argv[1]).glob("batches-*.json"))
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(paths))
    children = [context.Process(target=_child, args=(path, start)) for path in paths]
    for child in children:
        child.start()
    for child in children:
        child.join()
    return 0 if all(child.exitcode == 0 for child in children) else 1


if __name__ == "__main__":
    sys.exit(main())
