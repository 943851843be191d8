"""Tags and tenant for the LLM calls made inside a block of code, carried by contextvars.

Context variables follow the code that runs, not the thread: a `with tags(...)` block in a
coroutine applies to the calls that coroutine awaits, and never leaks into other tasks or threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType

_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})
_context_tags: ContextVar[Mapping[str, str]] = ContextVar("chargeback_client_tags", default=_EMPTY_TAGS)
_context_tenant: ContextVar[str | None] = ContextVar("chargeback_client_tenant", default=None)


def current_tags() -> Mapping[str, str]:
    """The tags set by the enclosing `tags(...)` blocks (the innermost wins on a shared key)."""
    return _context_tags.get()


def current_tenant() -> str | None:
    """The tenant set by the innermost enclosing `tenant(...)` block, if any."""
    return _context_tenant.get()


# Lower case: it reads as a function, `with chargeback_client.tags(feature="search"):`.
class tags:
    """Add tags to every instrumented LLM call made inside the block.

    `with tags(feature="search", customer="acme"): ...`; keys that are not Python identifiers go
    in a mapping: `with tags({"team.name": "search"}): ...`. Blocks nest; an inner block's value
    wins on a shared key. Values are converted with `str()`.
    """

    def __init__(self, mapping: Mapping[str, object] | None = None, /, **values: object) -> None:
        merged = {**(mapping or {}), **values}
        self._added = {str(key): str(value) for key, value in merged.items()}
        # A stack, so that one instance may be entered again inside itself.
        self._tokens: list[Token[Mapping[str, str]]] = []

    def __enter__(self) -> Mapping[str, str]:
        combined = MappingProxyType({**_context_tags.get(), **self._added})
        self._tokens.append(_context_tags.set(combined))
        return combined

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._tokens:
            _context_tags.reset(self._tokens.pop())


class tenant:
    """Attribute every instrumented LLM call made inside the block to the tenant `slug`.

    A per-call `chargeback_tenant=` still wins; an inner block wins over an outer one.
    """

    def __init__(self, slug: str) -> None:
        self._slug = slug
        self._tokens: list[Token[str | None]] = []

    def __enter__(self) -> str:
        self._tokens.append(_context_tenant.set(self._slug))
        return self._slug

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._tokens:
            _context_tenant.reset(self._tokens.pop())
