"""The real OpenAI and Anthropic SDK clients, pointed at a stub LLM and instrumented, report every
call to the live service: the stored rows carry the provider's buckets, the tags and a price."""

import asyncio
import logging

import anthropic
import openai
import pytest

import chargeback_client
from chargeback.models import PricingSource, UsageRecord, UsageStatus
from tests.chargeback_client.stub_servers import REPLY_TEXT, SCENARIO_HEADER
from tests.factories import ApiKeyFactory, TenantFactory

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Does the ledger balance?"}]

# The buckets the stub's usage objects come to (see stub_servers): whole input minus its cached
# and cache-write parts, and the output with its reasoning part.
GPT_4O_MINI_CHAT = {
    "uncached_input_tokens": 86,
    "cached_input_tokens": 1920,
    "cache_write_tokens": 0,
    "output_tokens": 300,
    "reasoning_tokens": 0,
}
O4_MINI_CHAT = {
    "uncached_input_tokens": 176,
    "cached_input_tokens": 1024,
    "cache_write_tokens": 0,
    "output_tokens": 900,
    "reasoning_tokens": 640,
}
O4_MINI_RESPONSES = {
    "uncached_input_tokens": 220,
    "cached_input_tokens": 1280,
    "cache_write_tokens": 0,
    "output_tokens": 700,
    "reasoning_tokens": 512,
}
CLAUDE_HAIKU = {
    "uncached_input_tokens": 42,
    "cached_input_tokens": 12000,
    "cache_write_tokens": 1800,
    "output_tokens": 350,
    "reasoning_tokens": 0,
}
BUCKETS = tuple(GPT_4O_MINI_CHAT)


def buckets_of(row: UsageRecord) -> dict[str, int]:
    return {name: getattr(row, name) for name in BUCKETS}


def only_row() -> UsageRecord:
    rows = list(UsageRecord.objects.all())
    assert len(rows) == 1, rows
    return rows[0]


def assert_priced(row: UsageRecord) -> None:
    assert row.pricing_source == PricingSource.GENAI_PRICES
    assert row.cost_nanos > 0


def test_openai_chat_completion_is_reported_with_buckets_tags_tenant_and_cost(
    ingest_account, make_reporter, openai_client
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key, tags={"env": "test"})
    client = chargeback_client.instrument(openai_client, reporter, tags={"service": "answers", "env": "prod"})

    with chargeback_client.tags(feature="search"):
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, chargeback_tags={"customer": "acme"}
        )

    assert completion.choices[0].message.content == REPLY_TEXT
    assert reporter.flush(timeout=30)
    row = only_row()
    assert row.tenant == ingest_account.tenant
    assert (row.provider, row.model, row.status) == ("openai", "gpt-4o-mini-2024-07-18", UsageStatus.OK)
    assert buckets_of(row) == GPT_4O_MINI_CHAT
    # The instrument's tags win over the reporter's, the block's and the call's are added.
    assert row.tags == {"env": "prod", "service": "answers", "feature": "search", "customer": "acme"}
    assert row.event_id.startswith(completion.id + ".")
    assert row.latency_ms is not None
    assert_priced(row)
    assert reporter.stats() == {
        "sent": 1,
        "dropped": 0,
        "failed": 0,
        "rejected": 0,
        "retried": 0,
        "pending": 0,
        "calls_without_usage": 0,
    }


def test_openai_chat_stream_asks_for_usage_and_hides_the_usage_chunk_from_the_caller(
    ingest_account, make_reporter, openai_client, stub_llm
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    stream = client.chat.completions.create(model="o4-mini", messages=QUESTION, stream=True)
    chunks = list(stream)

    assert isinstance(stream, openai.Stream)
    assert stub_llm.requests[-1].body["stream_options"] == {"include_usage": True}
    # Without instrumentation the caller would not have had the usage-only chunk: it does not now.
    assert all(chunk.choices for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == REPLY_TEXT
    assert reporter.flush(timeout=30)
    row = only_row()
    assert (row.model, buckets_of(row)) == ("o4-mini-2025-04-16", O4_MINI_CHAT)
    assert_priced(row)


def test_openai_chat_stream_keeps_the_usage_chunk_the_caller_asked_for(
    ingest_account, make_reporter, openai_client, stub_llm
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    with client.chat.completions.create(
        model="o4-mini", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    ) as stream:
        chunks = [next(stream) for _ in range(6)]
        # The caller reads the last chunk with next() and then sees the end of the stream.
        with pytest.raises(StopIteration):
            next(stream)

    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 900
    assert reporter.flush(timeout=30)
    assert buckets_of(only_row()) == O4_MINI_CHAT


def test_an_endpoint_refusing_stream_options_still_streams_and_is_not_asked_again(
    ingest_account, make_reporter, stub_llm, caplog
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(
        openai.OpenAI(
            base_url=stub_llm.url + "/v1",
            api_key="sk-test",
            max_retries=0,
            default_headers={SCENARIO_HEADER: "no-stream-options"},
        ),
        reporter,
    )

    texts = [
        "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
        )
        for _ in range(2)
    ]

    assert texts == [REPLY_TEXT, REPLY_TEXT]
    # Refused once, then the caller's own request; the next call is not asked for usage at all.
    assert ["stream_options" in request.body for request in stub_llm.requests] == [True, False, False]
    assert reporter.flush(timeout=30)
    assert reporter.stats()["calls_without_usage"] == 2
    assert not UsageRecord.objects.exists()
    assert len([record for record in caplog.records if "refused stream_options" in record.getMessage()]) == 1


def test_openai_chat_stream_helper_is_reported_once(ingest_account, make_reporter, openai_client):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    with client.chat.completions.stream(model="gpt-4o-mini", messages=QUESTION) as stream:
        final = stream.get_final_completion()

    assert final.choices[0].message.content == REPLY_TEXT
    assert reporter.flush(timeout=30)
    assert buckets_of(only_row()) == GPT_4O_MINI_CHAT


@pytest.mark.parametrize("streaming", [False, True], ids=["response", "stream"])
def test_openai_responses_are_reported(ingest_account, make_reporter, openai_client, streaming):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    if streaming:
        events = list(client.responses.create(model="o4-mini", input="Does the ledger balance?", stream=True))
        assert events[-1].type == "response.completed"
    else:
        response = client.responses.create(model="o4-mini", input="Does the ledger balance?")
        assert response.output_text == REPLY_TEXT

    assert reporter.flush(timeout=30)
    row = only_row()
    assert (row.provider, row.model, row.status) == ("openai", "o4-mini-2025-04-16", UsageStatus.OK)
    assert buckets_of(row) == O4_MINI_RESPONSES
    assert_priced(row)


@pytest.mark.parametrize("streaming", [False, True], ids=["message", "stream"])
def test_anthropic_messages_are_reported_with_cache_reads_and_writes(
    ingest_account, make_reporter, anthropic_client, streaming
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(anthropic_client, reporter, tags={"service": "answers"})

    if streaming:
        # Input and cache tokens come in message_start, the output tokens in message_delta.
        with client.messages.create(
            model="claude-haiku-4-5", max_tokens=512, messages=QUESTION, stream=True
        ) as stream:
            events = [event.type for event in stream]
        assert isinstance(stream, anthropic.Stream)
        assert events[0] == "message_start" and events[-1] == "message_stop"
    else:
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=512, messages=QUESTION)
        assert message.content[0].text == REPLY_TEXT

    assert reporter.flush(timeout=30)
    row = only_row()
    assert (row.provider, row.model) == ("anthropic", "claude-haiku-4-5-20251001")
    assert buckets_of(row) == CLAUDE_HAIKU
    assert row.tags == {"service": "answers"}
    assert_priced(row)


def test_anthropic_stream_helper_is_reported(ingest_account, make_reporter, anthropic_client):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(anthropic_client, reporter)

    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=512, messages=QUESTION, chargeback_tags={"feature": "chat"}
    ) as stream:
        text = stream.get_final_text()

    assert text == REPLY_TEXT
    assert reporter.flush(timeout=30)
    row = only_row()
    assert buckets_of(row) == CLAUDE_HAIKU
    assert row.tags == {"feature": "chat"}


def test_parse_and_beta_methods_are_reported_too(
    ingest_account, make_reporter, openai_client, anthropic_client
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    openai_client = chargeback_client.instrument(openai_client, reporter)
    anthropic_client = chargeback_client.instrument(anthropic_client, reporter)

    openai_client.chat.completions.parse(model="gpt-4o-mini", messages=QUESTION)
    openai_client.responses.parse(model="o4-mini", input="Does the ledger balance?")
    anthropic_client.messages.parse(model="claude-haiku-4-5", max_tokens=512, messages=QUESTION)
    anthropic_client.beta.messages.create(model="claude-haiku-4-5", max_tokens=512, messages=QUESTION)
    with anthropic_client.beta.messages.stream(
        model="claude-haiku-4-5", max_tokens=512, messages=QUESTION
    ) as stream:
        stream.until_done()

    assert reporter.flush(timeout=30)
    assert sorted(UsageRecord.objects.values_list("model", flat=True)) == [
        "claude-haiku-4-5-20251001",
        "claude-haiku-4-5-20251001",
        "claude-haiku-4-5-20251001",
        "gpt-4o-mini-2024-07-18",
        "o4-mini-2025-04-16",
    ]


def test_raw_response_calls_pass_through_untouched_and_unreported(
    ingest_account, make_reporter, openai_client, stub_llm
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=QUESTION)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=QUESTION, stream=True
    ) as streamed:
        body = b"".join(streamed.iter_bytes())

    assert raw.parse().usage.prompt_tokens == 2006
    # No usage was asked for on the caller's behalf: the raw stream is the one the caller asked for.
    assert "stream_options" not in stub_llm.requests[-1].body
    assert b'"usage"' not in body
    assert reporter.flush(timeout=30)
    assert reporter.stats()["calls_without_usage"] == 0
    assert not UsageRecord.objects.exists()


def test_async_clients_report_like_sync_ones_and_tags_follow_each_task(
    ingest_account, make_reporter, stub_llm
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    openai_client = chargeback_client.instrument(
        openai.AsyncOpenAI(base_url=stub_llm.url + "/v1", api_key="sk-test", max_retries=0), reporter
    )
    anthropic_client = chargeback_client.instrument(
        anthropic.AsyncAnthropic(base_url=stub_llm.url, api_key="sk-ant-test", max_retries=0), reporter
    )

    async def chat(feature: str) -> str:
        with chargeback_client.tags(feature=feature):
            completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
            return completion.choices[0].message.content

    async def chat_stream() -> str:
        with chargeback_client.tags(feature="chat-stream"):
            stream = await openai_client.chat.completions.create(
                model="o4-mini", messages=QUESTION, stream=True
            )
            return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

    async def responses_stream() -> str:
        with chargeback_client.tags(feature="responses-stream"):
            stream = await openai_client.responses.create(model="o4-mini", input="Hello?", stream=True)
            async with stream:
                return [event.type async for event in stream][-1]

    async def messages_stream() -> str:
        with chargeback_client.tags(feature="messages-stream"):
            async with anthropic_client.messages.stream(
                model="claude-haiku-4-5", max_tokens=512, messages=QUESTION
            ) as stream:
                return await stream.get_final_text()

    async def messages_raw_stream() -> str:
        with chargeback_client.tags(feature="messages-raw-stream"):
            stream = await anthropic_client.messages.create(
                model="claude-haiku-4-5", max_tokens=512, messages=QUESTION, stream=True
            )
            parts = []
            while True:
                try:
                    event = await stream.__anext__()
                except StopAsyncIteration:
                    return "".join(parts)
                if event.type == "content_block_delta":
                    parts.append(event.delta.text)

    async def main() -> list[str]:
        return await asyncio.gather(
            chat("search"),
            chat("summaries"),
            chat_stream(),
            responses_stream(),
            messages_stream(),
            messages_raw_stream(),
        )

    answers = asyncio.run(main())

    assert answers == [REPLY_TEXT, REPLY_TEXT, REPLY_TEXT, "response.completed", REPLY_TEXT, REPLY_TEXT]
    assert reporter.flush(timeout=30)
    rows = {row.tags["feature"]: row for row in UsageRecord.objects.all()}
    assert set(rows) == {
        "search",
        "summaries",
        "chat-stream",
        "responses-stream",
        "messages-stream",
        "messages-raw-stream",
    }
    assert buckets_of(rows["search"]) == buckets_of(rows["summaries"]) == GPT_4O_MINI_CHAT
    assert buckets_of(rows["chat-stream"]) == O4_MINI_CHAT
    assert buckets_of(rows["responses-stream"]) == O4_MINI_RESPONSES
    assert buckets_of(rows["messages-stream"]) == buckets_of(rows["messages-raw-stream"]) == CLAUDE_HAIKU
    for row in rows.values():
        assert_priced(row)


def test_a_failed_call_raises_as_it_would_and_is_counted_not_reported(
    ingest_account, make_reporter, openai_client
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    with pytest.raises(openai.BadRequestError, match="does not exist"):
        client.chat.completions.create(model="error", messages=QUESTION)

    assert reporter.flush(timeout=30)
    assert reporter.stats()["calls_without_usage"] == 1
    assert not UsageRecord.objects.exists()


def test_a_stream_that_fails_midway_is_reported_as_an_error_with_the_usage_seen(
    ingest_account, make_reporter, anthropic_client
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(anthropic_client, reporter)

    stream = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=512,
        messages=QUESTION,
        stream=True,
        extra_headers={SCENARIO_HEADER: "fail-midway"},
    )
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        for _ in stream:
            pass

    assert reporter.flush(timeout=30)
    row = only_row()
    assert row.status == UsageStatus.ERROR
    # The input side was billed (message_start said so); of the output, one token was reported.
    assert buckets_of(row) == {**CLAUDE_HAIKU, "output_tokens": 1}
    assert_priced(row)


def test_a_stream_closed_early_is_reported_when_closed(ingest_account, make_reporter, anthropic_client):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(anthropic_client, reporter)

    stream = client.messages.create(model="claude-haiku-4-5", max_tokens=512, messages=QUESTION, stream=True)
    first = next(iter(stream))
    assert reporter.stats()["pending"] == 0  # nothing is reported while the stream is open
    stream.close()

    assert first.type == "message_start"
    assert reporter.flush(timeout=30)
    row = only_row()
    assert row.status == UsageStatus.OK
    assert buckets_of(row) == {**CLAUDE_HAIKU, "output_tokens": 1}


def test_a_reporting_bug_never_reaches_the_application(
    ingest_account, make_reporter, openai_client, monkeypatch, caplog
):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    def broken_report(record):
        raise RuntimeError("a bug in reporting")

    monkeypatch.setattr(reporter, "report", broken_report)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)

    assert completion.choices[0].message.content == text == REPLY_TEXT
    bug_logs = [record for record in caplog.records if record.name == "chargeback_client"]
    assert len(bug_logs) == 2 and all(record.levelno == logging.ERROR for record in bug_logs)


def test_instrumenting_a_client_twice_reports_each_call_once(ingest_account, make_reporter, openai_client):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter)

    assert chargeback_client.instrument(client, reporter) is client
    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)

    assert reporter.flush(timeout=30)
    assert UsageRecord.objects.count() == 1


def test_a_global_key_reports_to_the_tenant_each_call_names(live_server, make_reporter, openai_client):
    for slug in ("search", "billing", "support"):
        TenantFactory(slug=slug)
    _, secret = ApiKeyFactory.create_with_secret(tenant=None, scopes=["ingest"])
    reporter = make_reporter(live_server.url, secret)
    client = chargeback_client.instrument(openai_client, reporter, tenant="search")

    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    with chargeback_client.tenant("billing"):
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
        client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, chargeback_tenant="support")

    assert reporter.flush(timeout=30)
    assert sorted(UsageRecord.objects.values_list("tenant__slug", flat=True)) == [
        "billing",
        "search",
        "support",
    ]


def test_instrument_refuses_what_is_not_an_sdk_client():
    reporter = chargeback_client.Reporter("http://127.0.0.1:9", "unused")
    try:
        with pytest.raises(TypeError, match="OpenAI or Anthropic"):
            chargeback_client.instrument(object(), reporter)
    finally:
        reporter.close(timeout=0)
