"""The reporter against a live service that is down, slow, refusing, or behind a full queue: the
application's calls never wait on it, and what it could deliver arrives exactly once."""

import logging
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

import chargeback_client
from chargeback.models import UsageRecord
from chargeback_client.reporter import (
    MAX_BACKOFF_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    MAX_TAG_VALUE_LENGTH,
    clean_tags,
    retry_delay,
)
from tests.chargeback_client.helpers import free_port, wait_until
from tests.chargeback_client.stub_servers import REPLY_TEXT

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Does the ledger balance?"}]
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def usage_record(number: int, **fields) -> dict:
    return {
        "event_id": f"event-{number}",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        **fields,
    }


def test_records_arrive_once_after_the_service_recovers_with_the_retries_counted(
    ingest_account, make_reporter, make_relay, openai_client
):
    port = free_port()
    reporter = make_reporter(f"http://127.0.0.1:{port}", ingest_account.api_key, backoff=0.05, max_retries=50)
    client = chargeback_client.instrument(openai_client, reporter)

    # Nothing listens on the port: the call still returns, and its record waits in the reporter.
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert completion.choices[0].message.content == REPLY_TEXT
    assert wait_until(lambda: reporter.stats()["retried"] >= 2)
    assert reporter.stats()["pending"] == 1 and reporter.stats()["sent"] == 0

    # The service comes up on that port, answers 503 once, then takes the batch.
    relay = make_relay(
        ingest_account.usage_url,
        port=port,
        behaviour=lambda number, event_ids: "fail" if number == 0 else "forward",
    )

    assert reporter.flush(timeout=60)
    stats = reporter.stats()
    assert (stats["sent"], stats["failed"], stats["pending"]) == (1, 0, 0)
    assert stats["retried"] >= 3
    assert [request.status for request in relay.requests] == [503, 200]
    # The retry resent the same event id, and the service stored it once.
    assert relay.requests[0].event_ids == relay.requests[1].event_ids
    assert list(UsageRecord.objects.values_list("event_id", flat=True)) == relay.requests[0].event_ids


def test_a_slow_reporting_endpoint_does_not_slow_the_llm_calls(
    ingest_account, make_reporter, make_relay, openai_client
):
    relay = make_relay(ingest_account.usage_url, behaviour=lambda number, event_ids: "hold")
    reporter = make_reporter(relay.url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    assert relay.request_arrived.wait(timeout=30)
    # The endpoint now holds the first call's report; the next call completes all the same.
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)

    assert completion.choices[0].message.content == REPLY_TEXT
    assert not relay.release.is_set()
    assert reporter.stats()["pending"] == 2  # one report held by the endpoint, one queued behind it
    relay.release.set()
    assert reporter.flush(timeout=30)
    assert UsageRecord.objects.count() == 2
    assert reporter.stats()["sent"] == 2


def test_a_full_queue_drops_new_records_counts_them_and_logs_once(
    ingest_account, make_reporter, make_relay, caplog
):
    relay = make_relay(ingest_account.usage_url, behaviour=lambda number, event_ids: "hold")
    reporter = make_reporter(relay.url, ingest_account.api_key, max_queue=3, batch_size=1)
    assert reporter.report(usage_record(0))
    assert relay.request_arrived.wait(timeout=30)  # record 0 is in flight, held by the endpoint

    queued = [reporter.report(usage_record(number)) for number in range(1, 11)]

    assert queued == [True] * 3 + [False] * 7
    stats = reporter.stats()
    assert (stats["dropped"], stats["pending"]) == (7, 4)  # bounded: max_queue waiting + 1 in flight
    full_warnings = [record for record in caplog.records if "queue is full" in record.getMessage()]
    assert len(full_warnings) == 1
    relay.release.set()
    assert reporter.flush(timeout=30)
    assert reporter.stats()["sent"] == 4
    assert sorted(UsageRecord.objects.values_list("event_id", flat=True)) == [f"event-{n}" for n in range(4)]


def test_a_client_error_is_logged_and_not_retried(live_server, make_reporter, caplog):
    reporter = make_reporter(live_server.url, "not-a-key", backoff=0.01)

    reporter.report(usage_record(1))

    assert reporter.flush(timeout=30)
    stats = reporter.stats()
    assert (stats["failed"], stats["retried"], stats["sent"]) == (1, 0, 0)
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and "401" in errors[0].getMessage()


def test_records_the_service_finds_invalid_are_counted_as_rejected(ingest_account, make_reporter, caplog):
    reporter = make_reporter(
        ingest_account.service_url, ingest_account.api_key, batch_size=2, flush_interval=60
    )

    reporter.report(usage_record(1))
    reporter.report(usage_record(2, cached_input_tokens=5000))  # a part larger than its whole
    assert reporter.flush(timeout=30)
    reporter.report(usage_record(3, output_tokens=-1))  # alone in its batch: a 422
    assert reporter.flush(timeout=30)

    stats = reporter.stats()
    assert (stats["sent"], stats["rejected"], stats["failed"]) == (1, 2, 0)
    assert list(UsageRecord.objects.values_list("event_id", flat=True)) == ["event-1"]
    assert any("inconsistent_tokens" in record.getMessage() for record in caplog.records)


def test_a_batch_too_large_for_the_service_is_sent_in_halves(ingest_account, make_reporter, make_relay):
    relay = make_relay(
        ingest_account.usage_url,
        behaviour=lambda number, event_ids: "too_large" if len(event_ids) > 2 else "forward",
    )
    reporter = make_reporter(relay.url, ingest_account.api_key, flush_interval=60)
    for number in range(6):
        reporter.report(usage_record(number))

    assert reporter.flush(timeout=30)

    assert [len(request.event_ids) for request in relay.requests] == [6, 3, 1, 2, 3, 1, 2]
    assert reporter.stats()["sent"] == 6
    assert UsageRecord.objects.count() == 6


def test_records_still_queued_are_sent_at_interpreter_exit(ingest_account):
    # A process that reports and exits without flush() or close(): the atexit hook sends the record.
    script = textwrap.dedent(
        f"""
        import chargeback_client
        reporter = chargeback_client.Reporter({ingest_account.service_url!r}, {ingest_account.api_key!r},
                                              flush_interval=3600)
        reporter.report({{"event_id": "at-exit", "provider": "openai", "model": "gpt-4o-mini",
                          "input_tokens": 10, "output_tokens": 5}})
        """
    )

    finished = subprocess.run(
        [sys.executable, "-c", script], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=60
    )

    assert finished.returncode == 0, finished.stderr
    assert list(UsageRecord.objects.values_list("event_id", flat=True)) == ["at-exit"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_with_an_empty_queue_of_its_own():
    reporter = chargeback_client.Reporter(f"http://127.0.0.1:{free_port()}", "unused", flush_interval=3600)
    try:
        reporter.report(usage_record(1))

        child = os.fork()
        if child == 0:  # pragma: no cover - the child process; it answers by its exit code
            try:
                fresh = reporter.stats()["pending"] == 0
                queued = reporter.report(usage_record(2)) and reporter.stats()["pending"] == 1
                os._exit(0 if fresh and queued else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(child, 0)

        assert os.waitstatus_to_exitcode(status) == 0
        assert reporter.stats()["pending"] == 1  # the parent still has its own record
    finally:
        reporter.close(timeout=0)


def test_a_closed_reporter_drops_new_records():
    reporter = chargeback_client.Reporter(f"http://127.0.0.1:{free_port()}", "unused")
    assert reporter.close(timeout=1)

    assert reporter.report(usage_record(1)) is False
    assert reporter.stats()["dropped"] == 1


def test_retry_delay_backs_off_exponentially_with_jitter_and_a_cap():
    for attempt in range(12):
        ceiling = min(0.5 * 2**attempt, MAX_BACKOFF_SECONDS)
        assert ceiling / 2 <= retry_delay(attempt, 0.5) <= ceiling


def test_retry_delay_honours_retry_after_in_seconds_or_as_a_date_within_a_cap():
    assert retry_delay(0, 0.5, "7") == 7
    assert retry_delay(5, 0.5, "0") == 0
    assert retry_delay(0, 0.5, "86400") == MAX_RETRY_AFTER_SECONDS
    in_twenty_seconds = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15 <= retry_delay(0, 0.5, in_twenty_seconds) <= 20
    # Unreadable: the usual backoff.
    assert 0.25 <= retry_delay(0, 0.5, "soon") <= 0.5


def test_tags_the_service_would_reject_are_cleaned_so_the_record_is_kept():
    tags = {"feature": "search", "bad key": "x", "long": "v" * 300, "count": 3}
    tags |= {f"extra{number}": "x" for number in range(40)}

    cleaned, problems = clean_tags(tags)

    assert "bad key" not in cleaned
    assert cleaned["long"] == "v" * MAX_TAG_VALUE_LENGTH
    assert cleaned["count"] == "3"
    assert len(cleaned) == 32
    assert len(problems) == 1 + 1 + (3 + 40 - 32)


def test_the_reporter_refuses_a_base_url_that_is_not_http():
    with pytest.raises(ValueError, match="http"):
        chargeback_client.Reporter("chargeback.example.com", "key")
