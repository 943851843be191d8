"""/api/v1/costs/: every figure equals the same figure worked out from the raw records by hand."""

import bisect
import csv
import io
import json
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from chargeback import costs, money
from chargeback.calendar import add_months, local_midnight
from chargeback.costs import latency_quantile_ms
from chargeback.models import LATENCY_BUCKET_BOUNDS_MS, UsageRecord
from chargeback.services import usage_records_ingest
from tenants.models import Tenant
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/costs/"

# The records span a US DST change (2026-03-08), a month end, and local midnights of every zone.
FIRST = datetime(2026, 2, 26, 12, tzinfo=UTC)
SPAN_MINUTES = 60 * 24 * 12
MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("x", "mystery"),  # unpriced
]


def _records(count: int, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    records = []
    for index in range(count):
        provider, model = rng.choice(MODELS)
        input_tokens = rng.randint(0, 50_000)
        output_tokens = rng.randint(0, 3000)
        tags = {}
        if rng.random() < 0.8:
            tags["feature"] = rng.choice(["search", "chat", ""])
        if rng.random() < 0.7:
            tags["customer"] = rng.choice(["acme", "globex"])
        # Every fourth record sits within minutes of a half-hour, where Kolkata's midnights fall.
        minute = rng.randint(0, SPAN_MINUTES)
        if index % 4 == 0:
            minute = minute - minute % 60 + rng.choice([29, 30, 31])
        record = {
            "event_id": f"e{index}",
            "timestamp": (FIRST + timedelta(minutes=minute, seconds=rng.randint(0, 59))).isoformat(),
            "tenant": rng.choice(["org-a", "team-a", "team-b", "org-b"]),
            "provider": provider,
            "model": model,
            "input_tokens": input_tokens,
            "cached_input_tokens": rng.randint(0, input_tokens // 2),
            "output_tokens": output_tokens,
            "reasoning_tokens": rng.randint(0, output_tokens // 3),
            "status": rng.choice(["ok", "ok", "ok", "error"]),
            "tags": tags,
        }
        if rng.random() < 0.9:
            record["latency_ms"] = rng.choice([rng.randint(1, 3000), rng.randint(3000, 90_000)])
        records.append(json.dumps(record).encode())
    return records


@pytest.fixture
def usage():
    org_a = TenantFactory(slug="org-a", kind="organization")
    TenantFactory(slug="team-a", parent=org_a, time_zone="Asia/Kolkata")
    TenantFactory(slug="team-b", parent=org_a, time_zone="America/New_York")
    TenantFactory(slug="org-b", kind="organization")
    result = usage_records_ingest(items=_records(400), scope_tenant_ids=None)
    assert result.accepted == 400
    return list(UsageRecord.objects.select_related("tenant"))


# --- the figures worked out by hand ----------------------------------------------------------------


def _natural_bucket(moment: datetime, granularity: str, zone: str) -> datetime | None:
    if granularity == "total":
        return None
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.astimezone(ZoneInfo(zone)).date()
    if granularity == "week":
        day -= timedelta(days=day.weekday())
    elif granularity == "month":
        day = day.replace(day=1)
    return local_midnight(day, zone)


def _group_value(record: UsageRecord, dimension: str) -> str:
    if dimension == "tenant":
        return record.tenant.slug
    if dimension == "model":
        return record.model_id
    if dimension in ("provider", "status"):
        return getattr(record, dimension)
    return record.tags.get(dimension.removeprefix("tag."), "")


def _expected(records, *, start, end, granularity, zone, group_by, tenant_slugs=None, tags=None):
    rows: dict = {}
    for record in records:
        if not start <= record.occurred_at < end:
            continue
        if tenant_slugs is not None and record.tenant.slug not in tenant_slugs:
            continue
        if any(record.tags.get(key, "") != value for key, value in (tags or {}).items()):
            continue
        bucket = _natural_bucket(record.occurred_at, granularity, zone)
        bucket = start if bucket is None else max(bucket, start)
        key = (bucket, tuple(_group_value(record, name) for name in group_by))
        row = rows.setdefault(key, {"cost": 0, "list": 0, "requests": 0, "errors": 0, "unpriced": 0,
                                    "input": 0, "cached": 0, "output": 0, "reasoning": 0,
                                    "latencies": []})  # fmt: skip
        row["cost"] += record.cost_nanos or 0
        row["list"] += record.list_cost_nanos or 0
        row["requests"] += 1
        row["errors"] += record.status == "error"
        row["unpriced"] += record.cost_nanos is None
        row["input"] += record.input_tokens
        row["cached"] += record.cached_input_tokens
        row["output"] += record.output_tokens
        row["reasoning"] += record.reasoning_tokens
        if record.latency_ms is not None:
            row["latencies"].append(record.latency_ms)
    return rows


def _histogram(latencies):
    buckets = [0] * (len(LATENCY_BUCKET_BOUNDS_MS) + 1)
    for latency in latencies:
        buckets[bisect.bisect_left(LATENCY_BUCKET_BOUNDS_MS, latency)] += 1
    return buckets


def _assert_rows_match(answer, expected, group_by):
    got = {}
    for row in answer["rows"]:
        start = datetime.fromisoformat(row["period_start"]).astimezone(UTC)
        got[(start, tuple(row["group"][name] for name in group_by))] = row
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        assert row["cost_usd"] == money.nanos_to_str(want["cost"]), key
        assert row["list_cost_usd"] == money.nanos_to_str(want["list"]), key
        assert row["requests"] == want["requests"], key
        assert row["errors"] == want["errors"], key
        assert row["unpriced_requests"] == want["unpriced"], key
        assert row["input_tokens"] == want["input"], key
        assert row["cached_input_tokens"] == want["cached"], key
        assert row["output_tokens"] == want["output"], key
        assert row["reasoning_tokens"] == want["reasoning"], key
        latencies = want["latencies"]
        if latencies:
            assert row["latency_average_ms"] == round(sum(latencies) / len(latencies), 1), key
            p95 = latency_quantile_ms(_histogram(latencies), 0.95)
            assert row["latency_p95_ms"] == round(p95, 1), key
        else:
            assert row["latency_p95_ms"] is None
    total_cost = sum(want["cost"] for want in expected.values())
    assert answer["totals"]["cost_usd"] == money.nanos_to_str(total_cost)
    assert answer["totals"]["requests"] == sum(want["requests"] for want in expected.values())


GROUPINGS = [
    (),
    ("tenant",),
    ("tenant", "tag.feature", "model"),
    ("provider", "status"),
    ("tag.customer",),
    ("tag.customer", "model", "tag.feature"),
]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/New_York"])
@pytest.mark.parametrize("granularity", ["hour", "day", "week", "month", "total"])
def test_rows_equal_the_raw_records_for_every_grouping(client_for, usage, zone, granularity):
    client = client_for(None, scopes=["read"])
    # Neither end is on the hour: the edges come from the raw records.
    start, end = datetime(2026, 2, 27, 5, 17, tzinfo=UTC), datetime(2026, 3, 9, 22, 45, tzinfo=UTC)
    for group_by in GROUPINGS:
        response = client.get(
            URL,
            {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "granularity": granularity,
                "tz": zone,
                "group_by": ",".join(group_by),
            },
        )
        assert response.status_code == 200, response.content
        answer = response.json()
        assert answer["time_zone"] == zone
        expected = _expected(
            usage, start=start, end=end, granularity=granularity, zone=zone, group_by=group_by
        )
        _assert_rows_match(answer, expected, group_by)


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Asia/Kathmandu", "Australia/Adelaide", "America/New_York"])
def test_local_days_split_utc_hours_exactly(client_for, usage, zone):
    """Date-only bounds are local midnights; in half-hour zones each one cuts a UTC hour in two."""
    client = client_for(None, scopes=["read"])
    answer = client.get(
        URL, {"start": "2026-02-27", "end": "2026-03-09", "tz": zone, "group_by": "tag.feature"}
    ).json()
    start, end = local_midnight(date(2026, 2, 27), zone), local_midnight(date(2026, 3, 9), zone)
    assert datetime.fromisoformat(answer["start"]) == start
    assert answer["source"] == "rollups"
    expected = _expected(usage, start=start, end=end, granularity="day", zone=zone, group_by=("tag.feature",))
    _assert_rows_match(answer, expected, ("tag.feature",))
    # A 23-hour day in New York (DST starts on 8 March): bucket ends are local midnights.
    if zone == "America/New_York":
        march_8 = [row for row in answer["rows"] if row["period_start"].startswith("2026-03-08")]
        assert march_8 and march_8[0]["period_end"] == "2026-03-09T00:00:00-04:00"


def test_filters_as_on_the_usage_list(client_for, usage):
    client = client_for(None, scopes=["read"])
    start, end = datetime(2026, 2, 26, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)
    window = {"start": start.isoformat(), "end": end.isoformat(), "granularity": "total"}

    def total(**parameters):
        answer = client.get(URL, {**window, **parameters}).json()
        return answer["totals"]["cost_usd"], answer["totals"]["requests"]

    def by_hand(predicate):
        chosen = [record for record in usage if start <= record.occurred_at < end and predicate(record)]
        return money.nanos_to_str(sum(record.cost_nanos or 0 for record in chosen)), len(chosen)

    assert total(tenant="org-a") == by_hand(lambda record: record.tenant.slug != "org-b")
    assert total(tenant="team-a") == by_hand(lambda record: record.tenant.slug == "team-a")
    assert total(provider="anthropic") == by_hand(lambda record: record.provider == "anthropic")
    assert total(model="gpt-4o-mini") == by_hand(lambda record: record.model_id == "gpt-4o-mini")
    assert total(status="error") == by_hand(lambda record: record.status == "error")
    assert total(**{"tag.feature": "search"}) == by_hand(
        lambda record: record.tags.get("feature") == "search"
    )
    assert total(**{"tag.customer": "acme", "tag.feature": "chat"}) == by_hand(
        lambda record: record.tags.get("customer") == "acme" and record.tags.get("feature") == "chat"
    )
    # An empty value means untagged (absent or empty), in the rollups and the raw records alike.
    assert total(**{"tag.feature": ""}) == by_hand(lambda record: not record.tags.get("feature"))
    assert total(**{"tag.customer": ""}) == by_hand(lambda record: not record.tags.get("customer"))


def test_rollups_and_raw_records_give_the_same_rows(client_for, usage):
    """The same grouping read from the rollups and, forced by a tag filter, from the raw records."""
    client = client_for(None, scopes=["read"])
    base = {"start": "2026-02-27", "end": "2026-03-09", "group_by": "tenant,model,tag.feature"}
    from_rollups = client.get(URL, base).json()
    # Every record either has a customer or not: both halves together are everything.
    halves = [client.get(URL, {**base, "tag.customer": value}).json() for value in ("", "acme", "globex")]
    assert from_rollups["source"] == "rollups" and halves[0]["source"] == "raw_records"
    merged: dict = {}
    for half in halves:
        for row in half["rows"]:
            key = (row["period_start"], tuple(row["group"].values()))
            merged[key] = merged.get(key, 0) + row["requests"]
    assert merged == {
        (row["period_start"], tuple(row["group"].values())): row["requests"] for row in from_rollups["rows"]
    }
    forced = client.get(URL, {**base, "group_by": "tenant,model,tag.feature,tag.nothing"}).json()
    assert forced["source"] == "raw_records"
    assert [{**row, "group": {**row["group"], "tag.nothing": ""}} for row in from_rollups["rows"]] == forced[
        "rows"
    ]


def test_a_tenant_key_sees_only_its_subtree(client_for, usage):
    team_a = Tenant.objects.get(slug="team-a")
    client = client_for(team_a, scopes=["read"])
    answer = client.get(URL, {"start": "2026-02-26", "end": "2026-03-11", "group_by": "tenant"}).json()
    assert {row["group"]["tenant"] for row in answer["rows"]} == {"team-a"}
    # The key's own tenant's zone is the default.
    assert answer["time_zone"] == "Asia/Kolkata"
    mine = [record for record in usage if record.tenant.slug == "team-a"]
    assert answer["totals"]["requests"] == len(mine)
    for other in ("org-b", "team-b", "org-a"):
        filtered = client.get(URL, {"start": "2026-02-26", "end": "2026-03-11", "tenant": other}).json()
        expected_requests = len(mine) if other == "org-a" else 0
        assert filtered["totals"]["requests"] == expected_requests
        assert filtered["time_zone"] != "America/New_York"  # another tenant's zone is not revealed
    org_b = Tenant.objects.get(slug="org-b")
    answer = (
        client_for(org_b, scopes=["read"]).get(URL, {"granularity": "total", "start": "2026-01-01"}).json()
    )
    assert answer["totals"]["requests"] == sum(record.tenant.slug == "org-b" for record in usage)


def test_keys_without_read_scope_and_anonymous_callers_are_refused(client_for, api_client, usage):
    assert api_client.get(URL).status_code == 401
    response = client_for(None, scopes=["ingest"]).get(URL)
    assert response.status_code == 403


def test_the_filtered_tenants_zone_is_the_default(client_for, usage):
    answer = client_for(None, scopes=["read"]).get(URL, {"tenant": "team-b", "granularity": "total"}).json()
    assert answer["time_zone"] == "America/New_York"
    assert answer["end"].endswith(("-05:00", "-04:00")) and "T00:00:00" in answer["end"]


def test_csv_has_a_line_per_row_with_the_json_figures(client_for, usage):
    client = client_for(None, scopes=["read"])
    parameters = {"start": "2026-02-27", "end": "2026-03-09", "group_by": "tenant,tag.customer"}
    answer = client.get(URL, parameters).json()
    for response in (
        client.get(URL, {**parameters, "format": "csv"}),
        client.get(URL, parameters, HTTP_ACCEPT="text/csv"),
    ):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        lines = list(csv.DictReader(io.StringIO(response.content.decode())))
        assert len(lines) == len(answer["rows"])
        for line, row in zip(lines, answer["rows"], strict=True):
            assert line["period_start"] == row["period_start"]
            assert line["tenant"] == row["group"]["tenant"]
            assert line["tag.customer"] == row["group"]["tag.customer"]
            assert line["cost_usd"] == row["cost_usd"]
            assert int(line["total_tokens"]) == row["total_tokens"]
            assert line["latency_p95_ms"] == (
                "" if row["latency_p95_ms"] is None else str(row["latency_p95_ms"])
            )


def test_errors_have_stable_codes_even_when_csv_was_asked_for(client_for, usage, monkeypatch):
    client = client_for(None, scopes=["read"])

    def code(parameters, **headers):
        response = client.get(URL, parameters, **headers)
        assert response.status_code == 400, response.content
        assert response["Content-Type"].startswith("application/json")
        return response.json()["error"]["code"]

    assert code({"group_by": "tenant,user_id"}) == "invalid_group_by"
    assert code({"group_by": "tag.bad key"}) == "invalid_group_by"
    assert code({"granularity": "minute"}) == "validation_error"
    assert code({"tz": "Mars/Olympus"}) == "invalid_time_zone"
    assert code({"start": "2026-03-02", "end": "2026-03-01"}) == "invalid_range"
    assert code({"start": "yesterday"}) == "validation_error"
    assert code({"start": "2026-03-01T00:00:00"}) == "validation_error"  # no offset
    assert code({"start": "2020-01-01", "end": "2026-01-01", "granularity": "hour"}) == "too_many_buckets"
    assert code({"start": "2020-01-01", "end": "2026-01-01", "group_by": "tag.customer"}) == "range_too_long"
    monkeypatch.setattr(costs, "MAX_ROWS", 3)
    window = {"start": "2026-02-26", "end": "2026-03-10"}
    assert code({**window, "group_by": "tenant,model"}) == "too_many_rows"
    assert code({**window, "group_by": "tenant,model", "format": "csv"}) == "too_many_rows"


def test_cost_per_1k_tokens_and_latency_quantiles():
    # 10 latencies of which 9 in (100, 200] and one in (1000, 1500]: p50 inside the first of them.
    buckets = [0] * (len(LATENCY_BUCKET_BOUNDS_MS) + 1)
    buckets[2], buckets[7] = 9, 1
    assert latency_quantile_ms(buckets, 0.5) == pytest.approx(100 + 100 * 5 / 9)
    assert latency_quantile_ms(buckets, 0.95) == pytest.approx(1000 + 500 * 0.5)
    buckets[-1] = 100  # mostly beyond the last bound: the open bucket reports its lower bound
    assert latency_quantile_ms(buckets, 0.95) == 60000
    assert latency_quantile_ms([0] * len(buckets), 0.95) is None
    sums = [0] * len(costs.SUM_FIELDS)
    sums[costs.SUM_FIELDS.index("cost_nanos")] = 1_000_000_001
    sums[costs.SUM_FIELDS.index("uncached_input_tokens")] = 2_000
    sums[costs.SUM_FIELDS.index("output_tokens")] = 1_000
    figures = costs.cost_metrics(sums)
    assert figures["total_tokens"] == 3000
    assert figures["cost_per_1k_tokens_usd"] == "0.333333334"  # 1.000000001 / 3, half-even to a nano
    assert figures["error_rate"] is None


def test_bucket_boundaries_follow_the_local_calendar():
    query = costs.CostQuery(
        start=local_midnight(date(2026, 1, 30), "Asia/Kolkata"),
        end=local_midnight(date(2026, 4, 2), "Asia/Kolkata"),
        granularity="month",
        time_zone="Asia/Kolkata",
    )
    boundaries = costs.bucket_boundaries(query)
    assert boundaries == [query.start] + [
        local_midnight(add_months(date(2026, 2, 1), months), "Asia/Kolkata") for months in range(3)
    ] + [query.end]
    assert boundaries[1] == datetime(2026, 1, 31, 18, 30, tzinfo=UTC)
