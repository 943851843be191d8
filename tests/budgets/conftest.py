import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from budgets.models import BudgetAlert
from tests.factories import BudgetFactory, BudgetThresholdFactory


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP endpoint that records every request and answers 500 to the first `fail_first`."""

    url: str = ""
    requests: list[ReceivedRequest] = field(default_factory=list)
    fail_first: int = 0
    fail_status: int = 500
    delay_seconds: float = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # While `hold` is set, a request is recorded, then kept unanswered until `hold` is cleared;
    # `held` tells that one is being kept (fault tests kill the sender meanwhile).
    hold: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)

    def answer(self, request: ReceivedRequest) -> int:
        with self.lock:
            self.requests.append(request)
            return self.fail_status if len(self.requests) <= self.fail_first else 200


@pytest.fixture
def receiver():
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            time.sleep(state.delay_seconds)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = state.answer(ReceivedRequest("POST", self.path, dict(self.headers.items()), body))
            while state.hold.is_set():
                state.held.set()
                time.sleep(0.05)
            reply = b"ok" if status < 400 else b"receiver is down"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def alert_for():
    """An alert on a new 80 % monthly budget of $100 for `tenant`, with $85 spent in March 2026."""

    def make(tenant, *, kind=BudgetAlert.Kind.ACTUAL, forecast_nanos=None, **budget_fields):
        budget = BudgetFactory(tenant=tenant, name="Monthly LLM", amount_nanos=100 * 10**9, **budget_fields)
        threshold = BudgetThresholdFactory(budget=budget, percent=80, on_forecast=True)
        return BudgetAlert.objects.create(
            budget=budget,
            threshold=threshold,
            period_key="2026-03",
            kind=kind,
            spent_nanos=85 * 10**9,
            forecast_nanos=forecast_nanos,
            amount_nanos=budget.amount_nanos,
            period_start=datetime(2026, 3, 1, tzinfo=UTC),
            period_end=datetime(2026, 4, 1, tzinfo=UTC),
        )

    return make
