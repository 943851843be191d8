"""A real Celery worker process for integration tests, on the test database and the real broker."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(settings['NAME']).resolve()}"
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 5432}/{settings['NAME']}"


class WorkerOutput(list):
    """The worker's output lines; `process` is the worker process (fault tests kill it)."""

    process: subprocess.Popen


@contextmanager
def celery_worker(timeout: float = 90, *, beat: bool = False, env: dict[str, str] | None = None):
    """Start `celery worker` (with beat if asked) on this test run's own queue; yield the queue
    name and the worker's output lines (with the process as `lines.process`); stop the worker
    afterwards."""
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    worker_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": test_database_url(),
        "CONN_MAX_AGE": "0",
        "REDIS_URL": settings.REDIS_URL,
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "chargeback", "worker", "--pool=solo", "--loglevel=INFO",
        "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
        f"--hostname={queue}-{uuid.uuid4().hex[:6]}@%h",
    ]  # fmt: skip
    schedule_dir = tempfile.mkdtemp(prefix="chargeback-beat-")
    if beat:
        command += ["--beat", f"--schedule={schedule_dir}/schedule"]
    # A session of its own: the embedded beat is a child process, which must not outlive the worker.
    process = subprocess.Popen(
        command, cwd=ROOT, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    lines = WorkerOutput()
    lines.process = process
    ready = threading.Event()

    def pump():
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if " ready." in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.is_set():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Celery worker did not start:\n" + "".join(lines[-40:]))
            time.sleep(0.2)
        yield queue, lines
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with suppress(ProcessLookupError):  # whatever is left of it (beat), gone or not
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(schedule_dir, ignore_errors=True)


def wait_for(predicate, *, timeout: float = 60, interval: float = 0.3, lines=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(
        "condition not met in time" + ("\nworker log:\n" + "".join(lines[-40:]) if lines else "")
    )
