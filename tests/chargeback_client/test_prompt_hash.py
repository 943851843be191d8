"""The client's prompt hashes: opt-in hashes of the request (equal requests, equal hashes), a
per-call hash of the caller's own, and none by default; stored on the usage records."""

import hashlib
import json

import pytest

import chargeback_client
from chargeback.models import UsageRecord
from chargeback_client.instrumentation import request_prompt_hash

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Does the ledger balance?"}]


def test_request_prompt_hash_is_the_sha256_of_the_canonical_request():
    kwargs = {"model": "gpt-4o-mini", "messages": QUESTION, "temperature": 0}
    canonical = json.dumps(kwargs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert request_prompt_hash(kwargs) == expected
    # Streaming, timeouts and headers do not change the answer, so not the hash either.
    assert (
        request_prompt_hash({**kwargs, "stream": True, "timeout": 3, "extra_headers": {"x": "y"}}) == expected
    )
    assert request_prompt_hash({**kwargs, "temperature": 1}) != expected
    assert request_prompt_hash({"model": "m", "messages": object()}) is None


def test_hashes_are_opt_in_and_a_call_can_give_its_own(ingest_account, make_reporter, openai_client):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(openai_client, reporter, hash_prompts=True)

    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Other?"}])
    client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, chargeback_prompt_hash="faq-17")

    assert reporter.flush(timeout=30)
    hashes = sorted(UsageRecord.objects.values_list("prompt_hash", flat=True))
    same = request_prompt_hash({"model": "gpt-4o-mini", "messages": QUESTION})
    assert hashes.count(same) == 2 and "faq-17" in hashes and len(set(hashes)) == 3


def test_no_hash_by_default(ingest_account, make_reporter, anthropic_client):
    reporter = make_reporter(ingest_account.service_url, ingest_account.api_key)
    client = chargeback_client.instrument(anthropic_client, reporter)
    client.messages.create(model="claude-haiku-4-5", max_tokens=512, messages=QUESTION)
    assert reporter.flush(timeout=30)
    assert list(UsageRecord.objects.values_list("prompt_hash", flat=True)) == [None]
