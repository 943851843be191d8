from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anthropic
import openai
import pytest

from chargeback_client import Reporter
from chargeback_client.reporter import USAGE_PATH
from tenants.models import Tenant
from tests.chargeback_client.stub_servers import IngestRelay, StubLLM
from tests.factories import ApiKeyFactory, TenantFactory


@dataclass
class IngestAccount:
    """A tenant of the live service and an ingest key bound to it."""

    tenant: Tenant
    api_key: str
    service_url: str

    @property
    def usage_url(self) -> str:
        return self.service_url + USAGE_PATH


@pytest.fixture
def stub_llm() -> Iterator[StubLLM]:
    server = StubLLM()
    yield server
    server.close()


@pytest.fixture
def ingest_account(live_server) -> IngestAccount:
    tenant = TenantFactory(slug="search-team")
    _, secret = ApiKeyFactory.create_with_secret(tenant=tenant, scopes=["ingest"])
    return IngestAccount(tenant=tenant, api_key=secret, service_url=live_server.url)


@pytest.fixture
def make_reporter() -> Iterator[Callable[..., Reporter]]:
    """Reporters that send promptly (a short flush interval), closed after the test."""
    reporters: list[Reporter] = []

    def make(base_url: str, api_key: str, **options) -> Reporter:
        options.setdefault("flush_interval", 0.01)
        reporter = Reporter(base_url, api_key, **options)
        reporters.append(reporter)
        return reporter

    yield make
    for reporter in reporters:
        reporter.close(timeout=5)


@pytest.fixture
def make_relay() -> Iterator[Callable[..., IngestRelay]]:
    relays: list[IngestRelay] = []

    def make(target_url: str, **options) -> IngestRelay:
        relay = IngestRelay(target_url, **options)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.close()


@pytest.fixture
def openai_client(stub_llm) -> openai.OpenAI:
    return openai.OpenAI(base_url=stub_llm.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def anthropic_client(stub_llm) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stub_llm.url, api_key="sk-ant-test", max_retries=0)
