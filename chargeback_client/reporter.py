"""A background reporter that batches usage records and POSTs them to the chargeback service.

The application's side of the reporter is one short critical section (append to a bounded queue);
everything slow — encoding, gzip, HTTP, retries — happens on one daemon thread per reporter. The
reporter never raises into the application: a full queue drops the record (counted and logged), a
service that stays down costs the records of the batches it could not take (counted and logged).
"""

from __future__ import annotations

import atexit
import gzip
import http.client
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

from chargeback_client import __version__

logger = logging.getLogger("chargeback_client")

USAGE_PATH = "/api/v1/usage/"
# The service refuses a request with more records than this (413).
MAX_RECORDS_PER_REQUEST = 10_000
MAX_TAGS = 32
MAX_TAG_VALUE_LENGTH = 256
TAG_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Backoff doubles per attempt up to this; a server's Retry-After is honoured up to the second cap,
# so that one misbehaving proxy cannot park the reporter (and its full queue) for an hour.
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 60.0
# Repeated warnings of one kind (drops, rejected records) are logged at most once per interval.
LOG_INTERVAL_SECONDS = 60.0
# How much of an answer body is read: enough for the JSON result or an error message.
MAX_ANSWER_BYTES = 1 << 20
RETRYABLE_STATUSES = frozenset({408, 429})

STAT_NAMES = ("sent", "dropped", "failed", "rejected", "retried", "pending", "calls_without_usage")


class _ThrottledLog:
    """Log a kind of warning at most once per interval, saying how many were left out meanwhile."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._interval = interval
        self._lock = threading.RLock()
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last_logged[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d similar messages suppressed in the last %ds)"
            args = (*args, suppressed, int(self._interval))
        logger.log(level, message, *args)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Make a redirect an error: urllib would follow it as a GET without the body, and the records
    would be counted as sent. A base_url that redirects (http -> https) must be corrected."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one POST came back with: an HTTP status, or the network error that prevented one."""

    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    network_error: BaseException | None = None


def retry_delay(attempt: int, backoff: float, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number `attempt + 1`.

    The server's `Retry-After` (seconds or an HTTP date) wins when present, capped at
    MAX_RETRY_AFTER_SECONDS; otherwise `backoff * 2**attempt` capped at MAX_BACKOFF_SECONDS, with
    "equal jitter" (a random point in its upper half) so that many clients do not retry in step.
    """
    if retry_after is not None:
        seconds = _retry_after_seconds(retry_after)
        if seconds is not None:
            return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
    ceiling = min(backoff * (2**attempt), MAX_BACKOFF_SECONDS)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _retry_after_seconds(value: str) -> float | None:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime.now(UTC)).total_seconds()


def clean_tags(tags: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Tags the service accepts, and what had to be left out or shortened to get there.

    The service rejects a whole record for one bad tag; losing a tag is better than losing the
    cost of the call, so bad keys are dropped, values are shortened and extra keys are cut.
    """
    cleaned: dict[str, str] = {}
    problems: list[str] = []
    for key, value in tags.items():
        key = str(key)
        if not TAG_KEY_PATTERN.fullmatch(key):
            problems.append(f"tag key {key!r} is not [A-Za-z0-9_.:-]{{1,64}}")
            continue
        if len(cleaned) >= MAX_TAGS:
            problems.append(f"more than {MAX_TAGS} tags; {key!r} left out")
            continue
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_TAG_VALUE_LENGTH:
            problems.append(f"tag {key!r} shortened to {MAX_TAG_VALUE_LENGTH} characters")
            text = text[:MAX_TAG_VALUE_LENGTH]
        cleaned[key] = text
    return cleaned, problems


class Reporter:
    """Sends usage records to a chargeback service from a background thread, in gzip'd batches.

    `report(record)` queues one record in the API's format (see the package README) and returns at
    once. A batch goes out when `batch_size` records are waiting, `flush_interval` seconds after
    the oldest waiting record arrived, or on `flush()`. Network errors, 408, 429 and 5xx answers are
    retried up to `max_retries` times with exponential backoff starting at `backoff` seconds
    (honouring Retry-After); other 4xx answers are logged and not retried. Every record keeps its
    `event_id` across retries, so the service counts a resend as a duplicate, never twice.

    At most `max_queue` records wait; when the queue is full, new records are dropped and counted
    (`stats()["dropped"]`). `close()` (also run at interpreter exit) sends what is waiting, for at
    most `shutdown_timeout` seconds. A reporter is thread-safe, and a forked child process starts
    with an empty queue and its own thread (the parent keeps sending what it had queued).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        tenant: str | None = None,
        tags: Mapping[str, str] | None = None,
        batch_size: int = 500,
        flush_interval: float = 2.0,
        max_queue: int = 10_000,
        timeout: float = 5.0,
        max_retries: int = 6,
        backoff: float = 0.5,
        shutdown_timeout: float = 5.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL of the chargeback service, not {base_url!r}")
        if not 1 <= batch_size <= MAX_RECORDS_PER_REQUEST:
            raise ValueError(f"batch_size must be between 1 and {MAX_RECORDS_PER_REQUEST}")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.url = base_url.rstrip("/") + USAGE_PATH
        self._api_key = api_key
        self._tenant = tenant
        self._default_tags, problems = clean_tags(tags or {})
        if problems:
            logger.warning("chargeback reporter: default tags adjusted: %s", "; ".join(problems))
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_queue = max_queue
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff = backoff
        self._shutdown_timeout = shutdown_timeout
        self._opener = urllib.request.build_opener(_RefuseRedirects())
        self._closed = False
        self._reset_state()
        _live_reporters.add(self)

    def _reset_state(self) -> None:
        """Fresh synchronisation and an empty queue: at construction, and in a forked child."""
        # Reentrant, because a dropped stream is reported from a weakref finalizer, which the
        # garbage collector may run on a thread that is inside this very lock.
        self._condition = threading.Condition(threading.RLock())
        self._queue: deque[dict[str, Any]] = deque()
        self._oldest_queued_at = 0.0
        # Records ever queued, ever taken off the queue, and ever settled (sent, rejected or
        # failed): flush() waits for `settled` to reach the `queued` it saw.
        self._queued_total = 0
        self._dequeued_total = 0
        self._settled_total = 0
        self._flush_target = 0
        self._in_flight = 0
        self._counts = dict.fromkeys(STAT_NAMES, 0)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._give_up = threading.Event()
        self._pid = os.getpid()
        self._log = _ThrottledLog()

    # --- the application's side ---------------------------------------------------------------------

    def report(self, record: Mapping[str, Any]) -> bool:
        """Queue one usage record (the API's format); False when it was dropped. Never raises.

        `event_id` (a new uuid4) and `timestamp` (now) are filled in when missing, so are the
        reporter's tenant and tags (a record's own tags win on a shared key).
        """
        try:
            prepared = self._prepare(record)
            with self._condition:
                if os.getpid() != self._pid:
                    # A fork the at-fork hook did not see (it only covers os.fork()).
                    self._reset_state()
                    return self.report(record)
                if self._closed or len(self._queue) >= self._max_queue:
                    self._counts["dropped"] += 1
                    dropped_because = "closed" if self._closed else "full"
                else:
                    if not self._queue:
                        self._oldest_queued_at = time.monotonic()
                        self._condition.notify_all()
                    self._queue.append(prepared)
                    self._queued_total += 1
                    if len(self._queue) >= self._batch_size:
                        self._condition.notify_all()
                    self._start_thread_locked()
                    return True
            if dropped_because == "closed":
                self._log.log(
                    logging.WARNING, "closed", "chargeback reporter is closed; a usage record was dropped"
                )
            else:
                self._log.log(
                    logging.WARNING,
                    "dropped",
                    "chargeback reporter queue is full (%d records); usage records are being dropped "
                    "(%d dropped so far)",
                    self._max_queue,
                    self._counts["dropped"],
                )
            return False
        except Exception:
            logger.exception("chargeback reporter: could not queue a usage record")
            return False

    def count_call_without_usage(self) -> None:
        """Count an LLM call that could not be reported because its usage is unknown."""
        with self._condition:
            self._counts["calls_without_usage"] += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far and wait until it was sent or given up on.

        True when that happened within `timeout` seconds (None: wait as long as it takes, which
        is bounded by the retries). Never raises.
        """
        try:
            with self._condition:
                target = self._queued_total
                if self._settled_total >= target:
                    return True
                if self._thread is None or not self._thread.is_alive():
                    # Nothing would ever send the queue (the thread could not start): do not wait.
                    self._start_thread_locked()
                    if self._thread is None or not self._thread.is_alive():
                        return False
                self._flush_target = max(self._flush_target, target)
                self._condition.notify_all()
                return self._condition.wait_for(lambda: self._settled_total >= target, timeout)
        except Exception:
            logger.exception("chargeback reporter: flush failed")
            return False

    def close(self, timeout: float | None = None) -> bool:
        """Stop taking records, send what is queued (for at most `timeout` seconds, default
        `shutdown_timeout`), and stop the thread. True when nothing was left unsent. Idempotent."""
        try:
            timeout = self._shutdown_timeout if timeout is None else timeout
            deadline = time.monotonic() + timeout
            with self._condition:
                self._closed = True
            delivered = self.flush(timeout)
            with self._condition:
                if not delivered and self._queue:
                    abandoned = len(self._queue)
                    self._queue.clear()
                    self._dequeued_total += abandoned
                    self._settled_total += abandoned
                    self._counts["failed"] += abandoned
                    logger.warning(
                        "chargeback reporter closed with %d usage records unsent after %.1fs",
                        abandoned,
                        timeout,
                    )
                self._stopping = True
                self._condition.notify_all()
                thread = self._thread
            if not delivered:
                # The batch in flight is retried no more; it is counted as failed when it returns.
                self._give_up.set()
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
            _live_reporters.discard(self)
            return delivered
        except Exception:
            logger.exception("chargeback reporter: close failed")
            return False

    def stats(self) -> dict[str, int]:
        """Counters since start: records `sent` (the service stored them or already had them),
        `dropped` (queue full or reporter closed), `failed` (given up after retries or refused with a
        4xx), `rejected` (the service found them invalid), request `retried` attempts, records
        `pending` (queued or in flight), and LLM `calls_without_usage` (not reportable)."""
        with self._condition:
            counts = dict(self._counts)
            counts["pending"] = len(self._queue) + self._in_flight
            return counts

    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Reporter {self.url} {self.stats()}>"

    def _prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        prepared = dict(record)
        prepared.setdefault("event_id", uuid.uuid4().hex)
        prepared.setdefault("timestamp", datetime.now(UTC).isoformat())
        if prepared.get("tenant") is None:
            prepared.pop("tenant", None)
            if self._tenant is not None:
                prepared["tenant"] = self._tenant
        tags, problems = clean_tags({**self._default_tags, **(prepared.get("tags") or {})})
        if problems:
            self._log.log(
                logging.WARNING, "tags", "chargeback reporter: tags adjusted: %s", "; ".join(problems)
            )
        prepared["tags"] = tags
        return prepared

    def _start_thread_locked(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name="chargeback-reporter", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            # At interpreter shutdown no new thread may start; the records stay queued, unsent.
            self._log.log(logging.WARNING, "thread", "chargeback reporter could not start its sender thread")
            return
        self._thread = thread

    # --- the sender thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                batch = self._next_batch_locked()
                if batch is None:
                    return
            try:
                self._deliver(batch)
            except Exception:
                logger.exception("chargeback reporter: a batch of %d usage records was lost", len(batch))
                self._count("failed", len(batch))
            finally:
                with self._condition:
                    self._in_flight = 0
                    self._settled_total += len(batch)
                    self._condition.notify_all()

    def _next_batch_locked(self) -> list[dict[str, Any]] | None:
        """Wait until a batch is due and take it off the queue; None when the reporter stops."""
        while True:
            if not self._queue:
                if self._stopping:
                    return None
                self._condition.wait()
                continue
            due_at = self._oldest_queued_at + self._flush_interval
            now = time.monotonic()
            if (
                len(self._queue) >= self._batch_size
                or self._dequeued_total < self._flush_target
                or self._closed
                or now >= due_at
            ):
                size = min(self._batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
                self._dequeued_total += size
                self._in_flight = size
                # What is left waited at most as long as this batch; its interval starts now.
                self._oldest_queued_at = now
                return batch
            self._condition.wait(due_at - now)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._condition:
            self._counts[name] += amount

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """Send one batch, retrying what is worth retrying; counts where every record ended up."""
        body = gzip.compress(json.dumps(batch, separators=(",", ":"), default=str).encode(), compresslevel=6)
        attempt = 0
        while True:
            answer = self._post(body)
            if answer.status == 200:
                self._settle_accepted(batch, answer.body)
                return
            if answer.status == 413 and len(batch) > 1:
                # Too big for the service: send it in halves, each with its own retries.
                middle = len(batch) // 2
                self._deliver(batch[:middle])
                self._deliver(batch[middle:])
                return
            if answer.status == 422:
                self._count("rejected", len(batch))
                self._log.log(
                    logging.WARNING,
                    "rejected",
                    "chargeback service rejected %d usage records: %s",
                    len(batch),
                    _error_summary(answer.body),
                )
                return
            retryable = answer.status is None or answer.status in RETRYABLE_STATUSES or answer.status >= 500
            if not retryable:
                self._count("failed", len(batch))
                self._log.log(
                    logging.ERROR,
                    f"status-{answer.status}",
                    "chargeback service answered %s to %d usage records; not retried: %s",
                    answer.status,
                    len(batch),
                    "a redirect: set base_url to where it leads"
                    if answer.status is not None and 300 <= answer.status < 400
                    else _error_summary(answer.body),
                )
                return
            if attempt >= self._max_retries or self._give_up.is_set():
                self._count("failed", len(batch))
                self._log.log(
                    logging.ERROR,
                    "gave-up",
                    "chargeback service unreachable (%s); %d usage records lost after %d attempts",
                    answer.network_error or f"HTTP {answer.status}",
                    len(batch),
                    attempt + 1,
                )
                return
            delay = retry_delay(attempt, self._backoff, answer.retry_after)
            attempt += 1
            self._log.log(
                logging.INFO,
                "retrying",
                "chargeback service unavailable (%s); retrying %d usage records in %.1fs",
                answer.network_error or f"HTTP {answer.status}",
                len(batch),
                delay,
            )
            if self._give_up.wait(delay):
                self._count("failed", len(batch))
                return
            self._count("retried")

    def _post(self, body: bytes) -> _Answer:
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Accept": "application/json",
                "User-Agent": f"chargeback-client/{__version__}",
            },
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return _Answer(status=response.status, body=response.read(MAX_ANSWER_BYTES))
        except urllib.error.HTTPError as error:
            with error:
                try:
                    answer_body = error.read(MAX_ANSWER_BYTES)
                except (OSError, http.client.HTTPException):
                    answer_body = b""
                return _Answer(
                    status=error.code, body=answer_body, retry_after=error.headers.get("Retry-After")
                )
        except (OSError, http.client.HTTPException) as error:
            # URLError, connection refused or reset, timeouts: all worth another try.
            return _Answer(status=None, network_error=error)

    def _settle_accepted(self, batch: list[dict[str, Any]], body: bytes) -> None:
        try:
            result = json.loads(body)
            if "accepted" not in result:
                raise ValueError("not a usage ingest result")
            refused = int(result.get("rejected", 0)) + int(result.get("conflicts", 0))
        except (ValueError, TypeError, AttributeError):
            # A 200 that is not the service's answer: a wrong base_url behind a catch-all page.
            self._count("failed", len(batch))
            self._log.log(
                logging.ERROR,
                "not-the-service",
                "%s answered 200 but not with a usage result; is base_url the chargeback service?",
                self.url,
            )
            return
        with self._condition:
            self._counts["sent"] += len(batch) - refused
            self._counts["rejected"] += refused
        if refused:
            self._log.log(
                logging.WARNING,
                "rejected",
                "chargeback service rejected %d of %d usage records: %s",
                refused,
                len(batch),
                _first_errors(result.get("errors")),
            )

    def _after_fork_in_child(self) -> None:
        # The parent keeps its queue and sends it; the child must not send those records again,
        # nor wait on locks or a thread that did not survive the fork.
        self._reset_state()


def _first_errors(errors: Any, limit: int = 3) -> str:
    if not isinstance(errors, list) or not errors:
        return "no details"
    shown = "; ".join(
        f"{error.get('event_id')}: {error.get('code')} {error.get('message')}"
        for error in errors[:limit]
        if isinstance(error, dict)
    )
    return shown + (f"; and {len(errors) - limit} more" if len(errors) > limit else "")


def _error_summary(body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        details = error.get("details")
        extra = f" ({_first_errors(details.get('errors'))})" if isinstance(details, dict) else ""
        return f"{error.get('code')}: {error.get('message')}{extra}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace") or "no body"


_live_reporters: weakref.WeakSet[Reporter] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for reporter in list(_live_reporters):
        reporter.close()


def _reset_all_after_fork() -> None:
    for reporter in list(_live_reporters):
        reporter._after_fork_in_child()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_after_fork)
