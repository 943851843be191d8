"""The one extension point from ingestion to the layers above it (budgets, insights).

Apps register a hook in their AppConfig.ready(); ingestion calls every hook after its transaction
commits, with the records it actually stored. A failing hook is logged and never fails ingestion:
what hooks maintain (budget counters) is reconciled from the database periodically.
"""

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import NamedTuple

logger = logging.getLogger(__name__)


class IngestedRecord(NamedTuple):
    """One stored record, as hooks see it (a named tuple: one is made per ingested record)."""

    tenant_id: int
    occurred_at: datetime
    provider: str
    model_id: str
    tags: dict[str, str]
    cost_nanos: int | None


PostIngestHook = Callable[[Iterable[IngestedRecord], dict[int, list[int]]], None]
_post_ingest_hooks: list[PostIngestHook] = []


def post_ingest_hook_register(hook: PostIngestHook) -> None:
    if hook not in _post_ingest_hooks:
        _post_ingest_hooks.append(hook)


def post_ingest_hooks_active() -> bool:
    return bool(_post_ingest_hooks)


def post_ingest_hooks_run(records: Iterable[IngestedRecord], tenant_chains: dict[int, list[int]]) -> None:
    """Run every hook; `tenant_chains` maps each tenant id to its ancestors (itself first)."""
    for hook in _post_ingest_hooks:
        try:
            hook(records, tenant_chains)
        except Exception:
            logger.exception("post-ingest hook %s failed", getattr(hook, "__name__", hook))
