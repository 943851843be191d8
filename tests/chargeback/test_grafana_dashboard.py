"""deploy/: the Grafana dashboard asks only for metrics and labels that /metrics exports."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from chargeback.services import usage_records_ingest
from tests.chargeback.helpers import usage_record
from tests.factories import BudgetFactory, TenantFactory

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "chargeback.json"

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                   "and", "or", "unless", "inf", "nan"}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_LABEL_NAME = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def promql_names(expression: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) that a PromQL expression uses."""
    labels = set()
    for matchers in _MATCHERS.findall(expression):
        labels.update(_LABEL_NAME.findall(_STRING.sub('""', matchers)))
    for grouping in _GROUPING.findall(expression):
        labels.update(name.strip() for name in grouping.split(",") if name.strip())
    bare = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", _STRING.sub(" ", expression))))
    metrics = {
        name for name, call in _IDENTIFIER.findall(bare) if not call and name.lower() not in PROMQL_KEYWORDS
    }
    return metrics, labels


def test_promql_names_are_found():
    metrics, labels = promql_names(
        'histogram_quantile(0.95, sum by (le, model) (rate(x_bucket{tenant=~"$tenant", a="b}"}[$__rate_interval])))'
        " / on (model) group_left y > 0"
    )
    assert metrics == {"x_bucket", "y"}
    assert labels == {"le", "model", "tenant", "a"}


def _panels(items):
    for item in items:
        yield item
        yield from _panels(item.get("panels", []))


@pytest.fixture
def exported(client_for, django_capture_on_commit_callbacks, settings):
    """Metric and label names of a real scrape with usage, latencies, an unpriced model and a budget."""
    settings.METRICS_CACHE_SECONDS = 0
    settings.METRICS_TOKEN = ""
    org = TenantFactory(slug="org", kind="organization")
    TenantFactory(slug="team", parent=org)
    records = [
        usage_record("a", tenant="team"),
        usage_record("b", tenant="org", model="mystery", provider="x", status="error"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        usage_records_ingest(items=[json.dumps(record).encode() for record in records], scope_tenant_ids=None)
    BudgetFactory(tenant=org, period="fixed", fixed_start=datetime(2026, 3, 1, tzinfo=UTC),
                  fixed_end=datetime(2026, 4, 1, tzinfo=UTC))  # fmt: skip
    text = client_for(None, scopes=["read"]).get("/metrics").content.decode()
    metrics, labels = set(), set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            metrics.add(sample.name)
            labels.update(sample.labels)
    return metrics, labels


@pytest.mark.django_db
def test_every_panel_queries_only_exported_metrics(exported):
    metrics, labels = exported
    dashboard = json.loads(DASHBOARD.read_text())
    used_metrics: set[str] = set()
    queried = 0
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            names, label_names = promql_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= metrics, (panel["title"], names - metrics)
            assert label_names <= labels | {"le"}, (panel["title"], label_names - labels)
            used_metrics |= names
            queried += 1
    assert queried >= 15
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+)(\{.*\})?,\s*(\w+)\)", variable["query"]["query"])
            assert match and match.group(1) in metrics and match.group(3) in labels
    # The dashboard covers what the issue asks for.
    assert {"llm_cost_usd_total", "llm_tokens_total", "llm_requests_total", "llm_request_duration_seconds_bucket",
            "llm_unpriced_requests_total", "llm_budget_utilisation_ratio"} <= used_metrics  # fmt: skip


def test_the_dashboard_picks_its_data_source_by_variable_and_uses_proper_units():
    dashboard = json.loads(DASHBOARD.read_text())
    (datasource,) = [item for item in dashboard["templating"]["list"] if item["type"] == "datasource"]
    assert (datasource["name"], datasource["query"]) == ("datasource", "prometheus")
    units = {
        panel["title"]: panel["fieldConfig"]["defaults"]["unit"]
        for panel in _panels(dashboard["panels"])
        if panel["type"] != "row"
    }
    assert units["Cost over time by model"] == units["Cost over time by tenant"] == "currencyUSD"
    assert units["Cost per 1K tokens by model"] == "currencyUSD"
    assert units["Latency p50 and p95 by model"] == "s"
    assert units["Requests by status"] == "reqps"
    assert units["Budget utilisation (current period)"] == "percentunit"
    ids = [panel["id"] for panel in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


def test_provisioning_points_grafana_at_the_dashboard_and_prometheus_at_the_service():
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/chargeback.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((DEPLOY / "observability.compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasources["datasources"][0]["type"] == "prometheus"
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"]
