"""Private servers for fault tests: a Redis server, a PostgreSQL cluster and the web service
(gunicorn), each a child process of the test that it may pause, kill and start again.

Fault tests never touch the machine's shared Redis and PostgreSQL: other test runs use them.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_BIN = next(
    (
        path
        for path in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        if (path / "initdb").exists()
    ),
    None,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(ready, what: str, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:.0f} s")
        time.sleep(0.1)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RedisServer:
    """`redis-server` on a fixed free port, without persistence (a restart starts empty, as a
    crashed cache or broker without AOF would)."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_until(self._pong, "redis-server", self.process)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing answers (a hung server)."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL (also of a paused server): connections are reset, the port refuses, data is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.kill()


@contextmanager
def redis_server():
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb) on its own port and socket directory, trust auth,
    user `postgres`. As root, the server runs as the `postgres` system user, as initdb demands."""

    def __init__(self):
        if POSTGRES_BIN is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql"
            )
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chargeback-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self._as_user, *command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def init(self) -> None:
        self._run(str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")  # fmt: skip

    def start(self) -> None:
        # fsync off: the cluster lives for one test; crash safety is not what it is for.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "start")  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown: open sessions are terminated, as in a restart or failover."""
        self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(
            self.url("postgres").replace("postgres://", "postgresql://"), autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as_user, str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_cluster():
    cluster = PostgresCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def service_env(**overrides: str) -> dict[str, str]:
    """The environment of a service process (web or worker) of this test run: the test settings (so
    the same per-run queue and key prefixes), with `overrides` (DATABASE_URL, REDIS_URL, ...)."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "LOG_LEVEL": "WARNING", **overrides}


class WebService:
    """`gunicorn chargeback.wsgi`, as in production, answering on 127.0.0.1:port."""

    def __init__(self, env: dict[str, str], workers: int = 1):
        self.port = free_port()
        self.env = env
        self.workers = workers
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "chargeback.wsgi", "-w", str(self.workers),
             "-b", f"127.0.0.1:{self.port}", "--timeout", "120", "--graceful-timeout", "5"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def pump():
            for raw in self.process.stdout:
                self.output.append(raw.decode(errors="replace"))

        threading.Thread(target=pump, daemon=True).start()
        _wait_until(lambda: _accepts(self.port), "gunicorn", self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def request(
        self, method: str, path: str, *, secret: str | None = None, body=None, timeout: float = 30
    ) -> tuple[int, dict | str]:
        """(status, decoded JSON or text). `timeout` only guards against a hung request: the
        answer's speed is never asserted."""
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(payload)
        except ValueError:
            return response.status, payload.decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "".join(self.output[-lines:])


@contextmanager
def web_service(env: dict[str, str], workers: int = 1):
    service = WebService(env, workers=workers)
    service.start()
    try:
        yield service
    finally:
        service.stop()
