"""bench/load.py --short as a correctness test: a real gunicorn server on PostgreSQL under a few
seconds of mixed load, then every acknowledged record stored exactly once. Its timings are printed
by the script and asserted nowhere."""

import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from tests.private_servers import ROOT

pytestmark = pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="bench/load.py runs gunicorn on a PostgreSQL database it creates (and COPYs into it)",
)


def test_a_short_mixed_load_stores_every_acknowledged_record_exactly_once():
    database = connection.settings_dict
    run = subprocess.run(
        [sys.executable, "bench/load.py", "--short", "--drop-db", "--db", f"chargeback_load_{settings.RUN_ID}",
         "--pg-host", database.get("HOST") or "127.0.0.1", "--pg-port", str(database.get("PORT") or 5432),
         "--pg-user", database.get("USER") or "postgres"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "\nexactly-once: OK: " in run.stdout, run.stdout[-3000:]
