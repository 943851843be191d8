import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from chargeback.models import PricingSource, UsageRecord, UsageRollupHourly
from tests.chargeback.helpers import ledger_totals, usage_record
from tests.factories import PriceOverrideFactory, TenantFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/usage/"


@pytest.fixture
def team():
    org = TenantFactory(slug="org", kind="organization")
    return TenantFactory(slug="team", parent=org)


@pytest.fixture
def ingest_client(client_for, team):
    return client_for(team, scopes=["ingest", "read"])


def post(client, records, **kwargs):
    return client.post(URL, data=json.dumps(records), content_type="application/json", **kwargs)


def test_a_record_is_priced_attributed_and_rolled_up(ingest_client, team):
    response = post(ingest_client, [usage_record("e1", cached_input_tokens=200)])
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 1, "duplicates": 0, "conflicts": 0, "rejected": 0, "unpriced": 0, "errors": [],
    }  # fmt: skip
    record = UsageRecord.objects.get()
    assert record.tenant == team
    assert (record.uncached_input_tokens, record.cached_input_tokens, record.output_tokens) == (
        1000,
        200,
        300,
    )
    # gpt-4o: $2.50/M input, $1.25/M cached input, $10/M output.
    expected = 1000 * 2500 + 200 * 1250 + 300 * 10000  # nanos
    assert record.cost_nanos == record.list_cost_nanos == expected
    assert record.pricing_source == PricingSource.GENAI_PRICES
    assert record.price_version.startswith("genai-prices ")
    rollup = UsageRollupHourly.objects.get()
    assert rollup.hour == datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert (rollup.requests, rollup.cost_nanos, rollup.feature, rollup.model) == (
        1,
        expected,
        "search",
        "gpt-4o",
    )
    assert rollup.latency_ms_sum == 850


def test_resending_a_batch_changes_no_total(ingest_client):
    batch = [usage_record(f"e{index}", output_tokens=100 + index) for index in range(20)]
    assert post(ingest_client, batch).json()["accepted"] == 20
    before = ledger_totals()
    response = post(ingest_client, batch)
    assert response.json()["duplicates"] == 20
    assert response.json()["accepted"] == 0
    assert ledger_totals() == before


def test_a_resend_with_other_formatting_is_still_a_duplicate(ingest_client):
    post(ingest_client, [usage_record("e1")])
    same_meaning = usage_record("e1", timestamp="2026-03-02T11:15:00+01:00")
    assert post(ingest_client, [same_meaning]).json()["duplicates"] == 1


def test_a_conflicting_resend_is_reported_and_changes_nothing(ingest_client):
    post(ingest_client, [usage_record("e1"), usage_record("e2")])
    before = ledger_totals()
    response = post(ingest_client, [usage_record("e1", output_tokens=999), usage_record("e2")])
    body = response.json()
    assert (body["conflicts"], body["duplicates"], body["accepted"]) == (1, 1, 0)
    assert body["errors"] == [
        {"index": 0, "event_id": "e1", "code": "conflict", "message": body["errors"][0]["message"]}
    ]
    assert ledger_totals() == before
    assert UsageRecord.objects.get(event_id="e1").output_tokens == 300


def test_duplicates_within_one_batch(ingest_client):
    body = post(
        ingest_client, [usage_record("e1"), usage_record("e1"), usage_record("e1", output_tokens=1)]
    ).json()
    assert (body["accepted"], body["duplicates"], body["conflicts"]) == (1, 1, 1)
    assert UsageRecord.objects.count() == 1


def test_repeats_within_a_batch_of_a_stored_record_are_judged_against_the_stored_one(ingest_client):
    """A stored record, then a batch with a changed payload and the stored one under its event id:
    the stored one is a duplicate, the changed one a conflict, whatever their order."""
    assert post(ingest_client, [usage_record("e1")]).json()["accepted"] == 1
    for batch in (
        [usage_record("e1", output_tokens=1), usage_record("e1")],
        [usage_record("e1"), usage_record("e1", output_tokens=1)],
    ):
        body = post(ingest_client, batch).json()
        assert (body["accepted"], body["duplicates"], body["conflicts"]) == (0, 1, 1), batch
        changed = 0 if batch[0]["output_tokens"] == 1 else 1
        assert [(error["index"], error["code"]) for error in body["errors"]] == [(changed, "conflict")]
    assert UsageRecord.objects.get().output_tokens == usage_record("e1")["output_tokens"]


def test_a_batch_with_bad_records_stores_all_good_ones(ingest_client):
    batch = [
        usage_record("good-1"),
        usage_record("bad-1", input_tokens=-5),
        usage_record("good-2"),
        {"event_id": "bad-2"},
        usage_record("good-3"),
    ]
    body = post(ingest_client, batch).json()
    assert (body["accepted"], body["rejected"]) == (3, 2)
    assert [(error["index"], error["event_id"]) for error in body["errors"]] == [(1, "bad-1"), (3, "bad-2")]
    assert set(UsageRecord.objects.values_list("event_id", flat=True)) == {"good-1", "good-2", "good-3"}


FUTURE = (timezone.now() + timedelta(days=2)).isoformat()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"input_tokens": "12"}, "invalid_type"),
        ({"input_tokens": 1.5}, "invalid_type"),
        ({"input_tokens": True}, "invalid_type"),
        ({"input_tokens": -1}, "invalid_value"),
        ({"output_tokens": 10**12}, "invalid_value"),
        ({"latency_ms": -3}, "invalid_value"),
        ({"colour": "blue"}, "unknown_field"),
        ({"event_id": None}, "invalid_type"),
        ({"event_id": ""}, "invalid_value"),
        ({"timestamp": "2026-03-02T10:15:00"}, "timestamp_without_zone"),
        ({"timestamp": "yesterday"}, "invalid_value"),
        ({"timestamp": FUTURE}, "timestamp_in_future"),
        ({"timestamp": "2001-01-01T00:00:00Z"}, "timestamp_too_old"),
        ({"status": "maybe"}, "invalid_value"),
        ({"tags": {"feature": 3}}, "invalid_type"),
        ({"tags": {"bad key": "x"}}, "invalid_value"),
        ({"cached_input_tokens": 5000}, "inconsistent_tokens"),
        ({"reasoning_tokens": 301}, "inconsistent_tokens"),
        ({"usage": {"prompt_tokens": 10, "completion_tokens": 2}}, "ambiguous_tokens"),
        ({"cost_usd": "-1"}, "invalid_cost"),
        ({"tenant": "no-such-tenant"}, "tenant_not_allowed"),
    ],
)
def test_malformed_record_fields_get_stable_codes(ingest_client, change, code):
    body = post(ingest_client, [{**usage_record("bad"), **change}, usage_record("good")]).json()
    assert body["accepted"] == 1
    assert body["errors"][0]["code"] == code, body["errors"]
    assert body["errors"][0]["index"] == 0


@pytest.mark.parametrize("field", ["event_id", "timestamp", "provider", "model"])
def test_missing_required_fields(ingest_client, field):
    record = usage_record("bad")
    del record[field]
    body = post(ingest_client, [record, usage_record("good")]).json()
    assert body["errors"][0]["code"] == "missing_field"
    assert field in body["errors"][0]["message"]


def test_a_record_without_any_tokens_is_rejected(ingest_client):
    record = usage_record("bad")
    del record["input_tokens"], record["output_tokens"]
    assert post(ingest_client, [record, usage_record("ok")]).json()["errors"][0]["code"] == "missing_tokens"


def test_a_request_where_no_record_is_valid_is_a_422(ingest_client):
    response = post(ingest_client, [{"event_id": "x"}])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "no_valid_records"
    assert error["details"]["rejected"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"[{", "application/json", 400, "invalid_json"),
        (b"not json", "application/json", 400, "invalid_json"),
        (b'{"records": 5}', "application/json", 400, "invalid_body_shape"),
        (b'{"rows": []}', "application/json", 400, "invalid_body_shape"),
        (b"", "application/json", 400, "empty_body"),
        (b"[]", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies(ingest_client, body, content_type, status, code):
    response = ingest_client.post(URL, data=body, content_type=content_type)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_too_many_records(ingest_client, settings):
    settings.INGEST_MAX_RECORDS = 3
    response = post(ingest_client, [usage_record(f"e{index}") for index in range(4)])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_many_records"
    assert UsageRecord.objects.count() == 0


def test_a_gzip_bomb_is_refused(ingest_client, settings):
    settings.INGEST_MAX_BODY_BYTES = 10_000
    body = gzip.compress(b"[" + b" " * 50_000 + b"]")
    response = ingest_client.post(
        URL, data=body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 413


def test_gzip_and_unsupported_encodings(ingest_client):
    body = gzip.compress(json.dumps([usage_record("gz")]).encode())
    response = ingest_client.post(
        URL, data=body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.json()["accepted"] == 1
    response = ingest_client.post(
        URL, data=b"[]", content_type="application/json", HTTP_CONTENT_ENCODING="br"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_content_encoding")
    response = ingest_client.post(
        URL, data=b"nope", content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_gzip")


def test_ndjson_and_envelope_bodies(ingest_client):
    ndjson = "\n".join(json.dumps(usage_record(f"n{index}")) for index in range(3)) + "\n\n{broken\n"
    body = ingest_client.post(URL, data=ndjson, content_type="application/x-ndjson").json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert body["errors"][0]["code"] == "invalid_json"
    envelope = json.dumps({"records": [usage_record("env")]})
    assert ingest_client.post(URL, data=envelope, content_type="application/json").json()["accepted"] == 1


def test_unknown_models_are_unpriced_never_zero(ingest_client):
    body = post(ingest_client, [usage_record("u1", model="acme-finetune-v2"), usage_record("p1")]).json()
    assert body["unpriced"] == 1
    record = UsageRecord.objects.get(event_id="u1")
    assert record.pricing_source == PricingSource.UNPRICED
    assert record.cost_nanos is None and record.list_cost_nanos is None
    rollup = UsageRollupHourly.objects.get(model="acme-finetune-v2")
    assert (rollup.requests, rollup.unpriced_requests) == (1, 1)
    listed = ingest_client.get(URL + "?pricing_source=unpriced").json()["results"]
    assert [(row["event_id"], row["cost_usd"]) for row in listed] == [("u1", None)]


def test_client_reported_cost_is_used_only_without_a_price(ingest_client):
    post(
        ingest_client,
        [
            usage_record("r1", model="acme-finetune-v2", cost_usd="0.0123"),
            usage_record("r2", cost_usd=5),
        ],
    )
    reported = UsageRecord.objects.get(event_id="r1")
    assert (reported.pricing_source, reported.cost_nanos) == (PricingSource.CLIENT_REPORTED, 12_300_000)
    priced = UsageRecord.objects.get(event_id="r2")
    assert priced.pricing_source == PricingSource.GENAI_PRICES
    assert priced.reported_cost_nanos == 5_000_000_000
    assert priced.cost_nanos != priced.reported_cost_nanos


def test_a_price_override_with_valid_from_changes_only_later_records(ingest_client):
    PriceOverrideFactory(model="gpt-4o", valid_from=datetime(2026, 3, 2, 12, tzinfo=UTC), input_per_mtok=1,
                         output_per_mtok=2, per_request=Decimal("0.001"))  # fmt: skip
    post(
        ingest_client,
        [
            usage_record("before", timestamp="2026-03-02T11:59:59Z"),
            usage_record("after", timestamp="2026-03-02T12:00:00Z"),
        ],
    )
    before = UsageRecord.objects.get(event_id="before")
    after = UsageRecord.objects.get(event_id="after")
    assert before.pricing_source == PricingSource.GENAI_PRICES
    assert after.pricing_source == PricingSource.OVERRIDE
    assert after.cost_nanos == 1200 * 1000 + 300 * 2000 + 1_000_000


def test_the_nearest_tenant_override_wins_over_a_global_one(ingest_client, team):
    PriceOverrideFactory(model="gpt-4o", input_per_mtok=9, output_per_mtok=9)
    PriceOverrideFactory(model="gpt-4o", tenant=team.parent, input_per_mtok=3, output_per_mtok=3)
    PriceOverrideFactory(model="gpt-4o", tenant=team, input_per_mtok=1, output_per_mtok=1)
    other = TenantFactory(slug="other")
    PriceOverrideFactory(model="gpt-4o", tenant=other, input_per_mtok=7, output_per_mtok=7)
    post(ingest_client, [usage_record("e1")])
    assert UsageRecord.objects.get().cost_nanos == 1500 * 1000


def test_markup_is_applied_as_a_separate_step(client_for, team):
    team.parent.markup_percent = Decimal("10")
    team.parent.save()
    customer = TenantFactory(slug="customer", parent=team, markup_percent=Decimal("-25"))
    client = client_for(team, scopes=["ingest"])
    post(client, [usage_record("team-call"), usage_record("customer-call", tenant="customer")])
    team_call = UsageRecord.objects.get(event_id="team-call")
    assert team_call.cost_nanos == team_call.list_cost_nanos * 110 // 100
    customer_call = UsageRecord.objects.get(event_id="customer-call", tenant=customer)
    assert customer_call.cost_nanos == customer_call.list_cost_nanos * 75 // 100


def test_provider_usage_objects_are_accepted_in_place_of_token_fields(ingest_client):
    record = usage_record("anthropic-call", provider="anthropic", model="claude-sonnet-4-5")
    del record["input_tokens"], record["output_tokens"]
    record["usage"] = {
        "input_tokens": 100, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 500,
        "output_tokens": 250,
    }  # fmt: skip
    assert post(ingest_client, [record]).json()["accepted"] == 1
    stored = UsageRecord.objects.get()
    assert (stored.uncached_input_tokens, stored.cached_input_tokens, stored.cache_write_tokens) == (
        100,
        2000,
        500,
    )
    assert stored.output_tokens == 250


def test_provider_aliases_and_prefixed_models_are_normalised(ingest_client):
    post(ingest_client, [usage_record("g1", provider="gcp.gemini", model="gemini-2.5-flash"),
                         usage_record("o1", provider="openai", model="openai/gpt-4o")])  # fmt: skip
    gemini = UsageRecord.objects.get(event_id="g1")
    assert (gemini.provider, gemini.pricing_source) == ("google", PricingSource.GENAI_PRICES)
    prefixed = UsageRecord.objects.get(event_id="o1")
    assert prefixed.model == "openai/gpt-4o"
    assert prefixed.model_id == "gpt-4o"
    assert UsageRollupHourly.objects.filter(model="gpt-4o").exists()


def test_a_tenant_key_writes_its_descendants_but_never_another_tenant(client_for, team):
    TenantFactory(slug="child", parent=team)
    TenantFactory(slug="sibling", parent=team.parent)
    client = client_for(team, scopes=["ingest"])
    body = post(
        client,
        [usage_record("mine"), usage_record("child", tenant="child"), usage_record("theirs", tenant="sibling"),
         usage_record("parent", tenant="org")],
    ).json()  # fmt: skip
    assert body["accepted"] == 2
    assert [(error["event_id"], error["code"]) for error in body["errors"]] == [
        ("theirs", "tenant_not_allowed"),
        ("parent", "tenant_not_allowed"),
    ]
    assert set(UsageRecord.objects.values_list("tenant__slug", flat=True)) == {"team", "child"}


def test_a_global_key_must_name_the_tenant(client_for, team):
    client = client_for(None, scopes=["ingest"])
    body = post(client, [usage_record("nameless"), usage_record("named", tenant="team")]).json()
    assert body["accepted"] == 1
    assert body["errors"][0]["code"] == "missing_tenant"
    assert post(client, [usage_record("x", tenant="ghost")]).json()["error"]["details"]["errors"][0][
        "code"
    ] == ("unknown_tenant")


def test_the_same_event_id_may_exist_once_per_tenant(client_for, team):
    other = TenantFactory(slug="other")
    post(client_for(team, scopes=["ingest"]), [usage_record("shared-id")])
    post(client_for(other, scopes=["ingest"]), [usage_record("shared-id")])
    assert UsageRecord.objects.filter(event_id="shared-id").count() == 2


def test_records_of_a_deactivated_tenant_are_rejected(client_for, team):
    TenantFactory(slug="closed", parent=team, is_active=False)
    body = post(
        client_for(team, scopes=["ingest"]), [usage_record("x", tenant="closed"), usage_record("y")]
    ).json()
    assert body["errors"][0]["code"] == "tenant_inactive"
