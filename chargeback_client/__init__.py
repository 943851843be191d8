"""Report the cost of LLM calls to a chargeback service.

    reporter = chargeback_client.Reporter("https://chargeback.example.com", api_key)
    client = chargeback_client.instrument(openai.OpenAI(), reporter, tags={"service": "search"})

The package depends on the standard library only (and on the LLM SDK the application already
uses). See README.md in this package.
"""

__version__ = "0.1.0"

from chargeback_client.context import tags, tenant
from chargeback_client.instrumentation import instrument
from chargeback_client.reporter import Reporter

__all__ = ["Reporter", "__version__", "instrument", "tags", "tenant"]
