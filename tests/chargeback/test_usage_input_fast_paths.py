"""The shortcuts of the ingest hot path give exactly what the obvious code gives: the payload hash
(stored, so it must never change) and the tag-key check (moved out of the msgspec type)."""

import hashlib
import random
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from chargeback.pricing import TokenBuckets
from chargeback.usage_input import RecordError, UsageRecordIn, decode_record, payload_hash

_SORTED = msgspec.json.Encoder(order="sorted")


def _reference_hash(record, occurred_at, buckets, reported):
    canonical = (
        occurred_at.isoformat(),
        record.provider.strip().lower(),
        record.model,
        *buckets[:5],
        buckets.cache_write_1h,
        record.latency_ms,
        record.status,
        record.tags,
        reported,
    )
    return hashlib.blake2b(_SORTED.encode(canonical), digest_size=16).hexdigest()


def test_payload_hash_is_the_digest_of_the_isoformat_spelling():
    rng = random.Random(11)
    record = UsageRecordIn(
        event_id="e", timestamp=datetime(2026, 1, 1, tzinfo=UTC), provider="OpenAI", model="gpt-4o",
        latency_ms=850, tags={"feature": "search", "customer": "acme"},
    )  # fmt: skip
    buckets = TokenBuckets(100, 20, 3, 50, 7, 1)
    for index in range(5_000):
        moment = datetime(2015, 1, 1, tzinfo=UTC) + timedelta(
            microseconds=rng.randrange(15 * 365 * 86_400 * 10**6)
        )
        if index % 3 == 0:
            moment = moment.replace(microsecond=0)
        reported = rng.choice([None, 0, 123_456])
        expected = _reference_hash(record, moment, buckets, reported)
        assert payload_hash(record, moment, buckets, reported) == expected
        assert payload_hash(record, moment, buckets, reported, "openai") == expected
    # Not UTC (callers convert first, but the digest stays the isoformat one).
    local = datetime(2026, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    assert payload_hash(record, local, buckets, None) == _reference_hash(record, local, buckets, None)


def test_a_stored_digest_never_changes():
    record = decode_record(
        b'{"event_id":"e1","timestamp":"2026-03-02T10:15:00.5+01:00","provider":"openai","model":"gpt-4o",'
        b'"input_tokens":1200,"output_tokens":300,"latency_ms":850,"tags":{"feature":"search"}}'
    )
    occurred_at = record.timestamp.astimezone(UTC)
    digest = payload_hash(record, occurred_at, TokenBuckets(1200, 0, 0, 300, 0, 0), None)
    assert digest == "390be230eb21327e8545275517cfbc8c"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("bad key", "Expected `str` matching regex '^[A-Za-z0-9_.:-]+$' - at `key` in `$.tags`"),
        ("é", "Expected `str` matching regex '^[A-Za-z0-9_.:-]+$' - at `key` in `$.tags`"),
        ("", "Expected `str` of length >= 1 - at `key` in `$.tags`"),
        ("k" * 65, "Expected `str` of length <= 64 - at `key` in `$.tags`"),
    ],
)
def test_tag_keys_are_checked_with_the_same_error_as_before(key, message):
    raw = msgspec.json.encode(
        {
            "event_id": "e",
            "timestamp": "2026-01-01T00:00:00Z",
            "provider": "p",
            "model": "m",
            "tags": {key: "v"},
        }
    )
    for item in (raw, msgspec.json.decode(raw)):
        with pytest.raises(RecordError) as caught:
            decode_record(item)
        assert (caught.value.code, caught.value.message) == ("invalid_value", message)


def test_valid_tag_keys_pass_every_time():
    for _ in range(2):
        record = decode_record(
            b'{"event_id":"e","timestamp":"2026-01-01T00:00:00Z","provider":"p","model":"m",'
            b'"tags":{"feature":"a","env.name:x-1_2":"b"}}'
        )
        assert record.tags == {"feature": "a", "env.name:x-1_2": "b"}
