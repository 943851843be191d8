"""LiteLLM's generic API callback: its real logger over HTTP, and the mapping of its payloads."""

import asyncio
import json
import os
from datetime import UTC, datetime

import pytest

from chargeback.models import UsageRecord
from tests.factories import ApiKeyFactory, PriceOverrideFactory, TenantFactory

URL = "/api/v1/integrations/litellm/"
START = datetime(2026, 3, 2, 10, 15, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def litellm():
    """LiteLLM, imported with its bundled price map: by default it fetches one at import time."""
    saved = os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    yield litellm
    if saved is None:
        os.environ.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)
    else:
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = saved


@pytest.fixture
def org():
    return TenantFactory(slug="acme", kind="organization")


@pytest.fixture
def team(org):
    return TenantFactory(slug="search-team", parent=org)


def run_litellm_calls(litellm, *, log_format):
    """Two calls through LiteLLM (one fails) with its generic API logger, flushed before returning."""
    from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

    async def calls():
        # The logger reads GENERIC_LOGGER_ENDPOINT / GENERIC_LOGGER_HEADERS, as the proxy's
        # `callbacks: ["generic_api"]` does; it must be made inside a running event loop.
        logger = GenericAPILogger(log_format=log_format)
        litellm.callbacks = [logger]
        try:
            await litellm.acompletion(
                model="gpt-4o",
                messages=[{"role": "user", "content": "find me a hotel"}],
                mock_response="hi",
                metadata={
                    # What the proxy puts there for a request's `user`.
                    "user_api_key_end_user_id": "end-user-7",
                    "user_api_key_team_alias": "Search Team",
                    "user_api_key_alias": "search-prod-key",
                    "tags": ["hotel-search", "beta"],
                    "requester_metadata": {
                        "chargeback_customer": "globex",
                        "chargeback_prompt_hash": "sha256:hotel-search-v2",
                        "other": "ignored",
                    },
                },
            )
            with pytest.raises(litellm.InternalServerError):
                await litellm.acompletion(
                    model="anthropic/claude-sonnet-4-5",
                    messages=[{"role": "user", "content": "hi"}],
                    mock_response=Exception("provider down"),
                    metadata={"user_api_key_team_alias": "Search Team"},
                )
            # Success and failure callbacks run in the background; the batch is sent at 512 events
            # or every few seconds, so the test waits for both and flushes.
            for _ in range(200):
                if len(logger.log_queue) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(logger.log_queue) == 2
            await logger.async_send_batch()
        finally:
            # Closing the logger's keep-alive connections lets the live server's request threads
            # end, and with them their database connections (the test database is dropped later).
            await logger.async_httpx_client.close()
            # LiteLLM copies `callbacks` into its own success and failure lists; clear them all so
            # the next test's logger is the only one.
            litellm.logging_callback_manager._reset_all_callbacks()

    asyncio.run(calls())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("log_format", ["json_array", "ndjson", "single"])
def test_litellm_generic_api_logger_feeds_usage_records(
    litellm, live_server, monkeypatch, org, team, log_format
):
    _, secret = ApiKeyFactory.create_with_secret(tenant=org, scopes=["ingest"])
    # A negotiated rate for the team, so our cost and LiteLLM's list-price figure differ visibly.
    PriceOverrideFactory(tenant=team, model="gpt-4o", input_per_mtok=1, output_per_mtok=2)
    monkeypatch.setenv("GENERIC_LOGGER_ENDPOINT", f"{live_server.url}{URL}")
    monkeypatch.setenv("GENERIC_LOGGER_HEADERS", f"Authorization=Bearer {secret}")

    run_litellm_calls(litellm, log_format=log_format)

    success = UsageRecord.objects.get(status="ok")
    assert success.event_id.startswith("litellm-")
    assert (success.source, success.tenant) == ("litellm", team)
    assert (success.provider, success.model) == ("openai", "gpt-4o")
    # LiteLLM's mock usage: 10 input and 20 output tokens.
    assert (success.uncached_input_tokens, success.cached_input_tokens, success.output_tokens) == (10, 0, 20)
    assert success.tags == {
        "team": "Search Team",
        "key_alias": "search-prod-key",
        "user": "end-user-7",
        "call_type": "acompletion",
        "feature": "hotel-search",
        "customer": "globex",
    }
    # LiteLLM's list price ($2.50/M in, $10/M out) is kept as reported; ours is $1/M in, $2/M out.
    assert success.reported_cost_nanos == 10 * 2500 + 20 * 10000
    assert success.cost_nanos == 10 * 1000 + 20 * 2000
    assert success.latency_ms is not None
    assert success.prompt_hash == "sha256:hotel-search-v2"

    failure = UsageRecord.objects.get(status="error")
    assert (failure.provider, failure.model, failure.tenant) == ("anthropic", "claude-sonnet-4-5", team)
    assert (failure.input_tokens, failure.output_tokens, failure.cost_nanos) == (0, 0, 0)


# --- the mapping, through the endpoint --------------------------------------------------------


def payload(call_id="call-1", **fields):
    """A StandardLoggingPayload as LiteLLM 1.x sends it, trimmed to what matters plus some noise."""
    document = {
        "id": f"chatcmpl-{call_id}",
        "litellm_call_id": call_id,
        "trace_id": "t-1",
        "call_type": "acompletion",
        "cache_hit": None,
        "stream": False,
        "status": "success",
        "custom_llm_provider": "openai",
        "startTime": START,
        "endTime": START + 0.85,
        "completionStartTime": START + 0.5,
        "model": "gpt-4o",
        "model_group": "gpt-4o-prod",
        "metadata": {
            "user_api_key_alias": None,
            "user_api_key_team_id": "team-uuid-1",
            "user_api_key_team_alias": "search-team",
            "user_api_key_org_id": None,
            "user_api_key_end_user_id": None,
            "requester_metadata": {},
            "usage_object": {
                "completion_tokens": 300,
                "prompt_tokens": 1200,
                "total_tokens": 1500,
                "completion_tokens_details": None,
                "prompt_tokens_details": {"cached_tokens": 200, "audio_tokens": None},
            },
        },
        "response_cost": 0.00575,
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "request_tags": ["User-Agent: OpenAI/Python 1.99", "search"],
        "end_user": None,
        "messages": [{"role": "user", "content": "x" * 1000}],
        "response": {"choices": [{"message": {"content": "y"}}]},
        "model_parameters": {},
        "hidden_params": {"model_id": None},
        "model_map_information": {"model_map_key": "gpt-4o"},
        "error_str": None,
    }
    document.update(fields)
    return document


@pytest.fixture
def litellm_client(client_for, org, team):
    return client_for(org, scopes=["ingest"])


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.generic("POST", URL, data, content_type=content_type)


@pytest.mark.django_db
def test_a_json_array_of_payloads(litellm_client, team):
    response = post(litellm_client, [payload("a"), payload("b")])
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": 0, "unpriced": 0, "errors": [],
    }  # fmt: skip
    record = UsageRecord.objects.get(event_id="litellm-a")
    assert record.tenant == team
    assert (record.uncached_input_tokens, record.cached_input_tokens, record.output_tokens) == (
        1000,
        200,
        300,
    )
    assert record.occurred_at == datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
    assert record.latency_ms == 850
    assert record.tags == {
        "team": "search-team",
        "call_type": "acompletion",
        "model_group": "gpt-4o-prod",
        "feature": "search",  # LiteLLM's automatic User-Agent tag is skipped
    }
    assert record.reported_cost_nanos == record.cost_nanos == 1000 * 2500 + 200 * 1250 + 300 * 10000

    resent = post(litellm_client, [payload("a"), payload("b")])
    assert resent.json()["duplicates"] == 2


@pytest.mark.django_db
def test_ndjson_and_single_objects(litellm_client):
    ndjson = b"\n".join(json.dumps(payload(name)).encode() for name in ("n1", "n2", "n3")) + b"\n"
    assert post(litellm_client, ndjson).json()["accepted"] == 3
    assert post(litellm_client, ndjson, content_type="application/x-ndjson").json()["duplicates"] == 3
    assert post(litellm_client, payload("single")).json()["accepted"] == 1
    pretty = json.dumps(payload("pretty"), indent=2).encode()
    assert post(litellm_client, pretty).json()["accepted"] == 1
    assert UsageRecord.objects.count() == 5


@pytest.mark.django_db
def test_malformed_payloads_are_rejected_one_by_one(litellm_client):
    body = [
        payload("good"),
        "not an object",
        payload("no-model", model=None),
        payload("bad-tokens", metadata={}, prompt_tokens="lots"),
        payload("negative", metadata={}, completion_tokens=-1),
        payload("no-start", startTime=None),
        payload("bad-cost", response_cost={"usd": 1}),
        payload(
            "parts",
            metadata={"usage_object": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}},
        ),
        {"litellm_call_id": None, "id": None},
        {k: None for k in payload()},
        payload(
            "nulls", metadata=None, request_tags=None, end_user=None, model_group=None, response_cost=None
        ),
    ]
    response = post(litellm_client, body)

    assert response.status_code == 200
    result = response.json()
    assert (result["accepted"], result["rejected"]) == (2, 9)
    errors = {error["index"]: error for error in result["errors"]}
    assert errors[1]["code"] == "invalid_json"
    assert (errors[2]["event_id"], errors[2]["code"]) == ("litellm-no-model", "missing_field")
    assert errors[3]["code"] == errors[4]["code"] == "invalid_tokens"
    assert errors[5]["code"] == "invalid_timestamp"
    assert errors[6]["code"] == "invalid_cost"
    assert (errors[7]["event_id"], errors[7]["code"]) == ("litellm-parts", "inconsistent_tokens")
    assert errors[8]["code"] == errors[9]["code"] == "missing_field"
    nulls = UsageRecord.objects.get(event_id="litellm-nulls")
    assert (nulls.reported_cost_nanos, nulls.tags) == (None, {"call_type": "acompletion"})


@pytest.mark.django_db
def test_bodies_that_cannot_be_read_are_4xx(litellm_client):
    assert post(litellm_client, b"").status_code == 400
    assert post(litellm_client, b"[{").json()["error"]["code"] == "invalid_json"
    response = post(litellm_client, b"{not json")
    assert response.status_code == 422
    assert response.json()["error"]["details"]["rejected"] == 1
    assert post(litellm_client, b"{}", content_type="text/plain").status_code == 415


@pytest.mark.django_db
def test_the_tenant_comes_from_the_first_mapped_field_that_is_a_tenant(litellm_client, org, team):
    other = TenantFactory(slug="checkout", parent=org)
    outsider = TenantFactory(slug="outsider")
    body = [
        # requester_metadata.chargeback_tenant wins over the team alias.
        payload(
            "explicit",
            metadata={
                "requester_metadata": {"chargeback_tenant": "checkout"},
                "user_api_key_team_alias": "search-team",
            },
        ),
        # An alias that is no tenant: the team id is tried next, then the key's own tenant.
        payload(
            "by-id", metadata={"user_api_key_team_alias": "Unknown", "user_api_key_team_id": "search-team"}
        ),
        payload("fallback", metadata={"user_api_key_team_alias": "Unknown"}),
        # A tenant outside the key's scope is never written to: the key's own tenant is.
        payload("outside", metadata={"user_api_key_team_alias": "outsider"}),
    ]
    assert post(litellm_client, body).json()["accepted"] == 4
    tenants = dict(UsageRecord.objects.values_list("event_id", "tenant__slug"))
    assert tenants == {
        "litellm-explicit": other.slug,
        "litellm-by-id": team.slug,
        "litellm-fallback": org.slug,
        "litellm-outside": org.slug,
    }
    assert not UsageRecord.objects.filter(tenant=outsider).exists()


@pytest.mark.django_db
def test_the_requesters_prompt_hash_is_the_records_and_a_bad_one_is_dropped(litellm_client):
    def with_hash(call_id, prompt_hash):
        document = payload(call_id)
        document["metadata"]["requester_metadata"] = {
            "chargeback_prompt_hash": prompt_hash,
            "chargeback_team": "x",
        }
        return document

    response = post(litellm_client, [with_hash("kept", "sha256:faq-1"), with_hash("bad", "not a hash!")])
    assert response.status_code == 200 and response.json()["accepted"] == 2
    kept, bad = (UsageRecord.objects.get(event_id=f"litellm-{name}") for name in ("kept", "bad"))
    assert (kept.prompt_hash, bad.prompt_hash) == ("sha256:faq-1", None)
    # A field of the record, not a tag; other chargeback_ entries still are tags.
    assert "prompt_hash" not in kept.tags and kept.tags["team"] == "x"


@pytest.mark.django_db
def test_a_global_key_needs_a_mapped_tenant(client_for, team):
    client = client_for(None, scopes=["ingest"])
    result = post(client, [payload("mapped"), payload("unmapped", metadata={})]).json()
    assert result["accepted"] == 1
    assert result["errors"][0]["code"] == "missing_tenant"


@pytest.mark.django_db
def test_litellm_usage_objects_keep_cache_writes_and_reasoning(litellm_client):
    anthropic_usage = {
        # LiteLLM's Anthropic usage: prompt_tokens includes the cache reads and writes it adds back.
        "prompt_tokens": 1500,
        "completion_tokens": 400,
        "prompt_tokens_details": {
            "cached_tokens": 1000,
            "cache_creation_tokens": 200,
            "cache_creation_token_details": {
                "ephemeral_5m_input_tokens": 150,
                "ephemeral_1h_input_tokens": 50,
            },
        },
        "completion_tokens_details": {"reasoning_tokens": 120},
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 1000,
    }
    body = [
        payload(
            "claude",
            custom_llm_provider="anthropic",
            model="claude-sonnet-4-5",
            metadata={"usage_object": anthropic_usage, "user_api_key_team_alias": "search-team"},
        )
    ]
    assert post(litellm_client, body).json()["accepted"] == 1
    record = UsageRecord.objects.get()
    assert (record.uncached_input_tokens, record.cached_input_tokens, record.cache_write_tokens) == (
        300,
        1000,
        200,
    )
    assert (record.cache_write_1h_tokens, record.output_tokens, record.reasoning_tokens) == (50, 400, 120)


@pytest.mark.django_db
def test_cache_hits_are_skipped_and_failures_kept(litellm_client):
    body = [
        payload("hit", cache_hit=True, response_cost=0.0),
        payload(
            "failed", status="failure", metadata={"usage_object": {}}, prompt_tokens=0, completion_tokens=0
        ),
    ]
    response = post(litellm_client, body)
    assert response.json()["accepted"] == 1
    assert response["X-Chargeback-Ignored"] == "1"
    record = UsageRecord.objects.get()
    assert (record.event_id, record.status, record.input_tokens) == ("litellm-failed", "error", 0)


@pytest.mark.django_db
def test_the_callback_needs_an_ingest_key(client_for, api_client, org):
    assert post(api_client, [payload()]).status_code == 401
    assert post(client_for(org, scopes=["read"]), [payload()]).status_code == 403
