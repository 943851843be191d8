"""Report the usage of every call an OpenAI or Anthropic SDK client makes, one record per call.

`instrument(client, reporter)` replaces, on that client instance only, the methods that create
model output — `chat.completions.create/parse`, `responses.create/parse` (OpenAI) and
`messages.create/parse/stream` and their `beta.messages` twins (Anthropic), sync and async —
with wrappers that call the SDK unchanged and then queue a record. Streams stay the SDK's own
objects (their class is swapped for a subclass that watches the events go by), so `isinstance`
checks, context managers and the SDKs' stream helpers keep working.

Reporting must never break or slow the call: everything the wrappers do besides calling the SDK
is guarded, and a failure there is logged and forgotten. What reaches the application — return
value, exception, stream items — is what the SDK produced, with one documented exception (the
usage-only chunk this module asks OpenAI for, see `_prepare_call`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from chargeback_client.context import current_tags, current_tenant
from chargeback_client.reporter import Reporter, clean_tags

logger = logging.getLogger("chargeback_client")

# Keywords the wrapped methods accept on top of the SDK's own, removed before the SDK sees them.
TAGS_KEYWORD = "chargeback_tags"
TENANT_KEYWORD = "chargeback_tenant"
PROMPT_HASH_KEYWORD = "chargeback_prompt_hash"
# SDK keywords that do not change what the model answers: left out of a request's prompt hash.
_NOT_IN_PROMPT_HASH = frozenset(
    {"stream", "stream_options", "timeout", "extra_headers", "extra_query", "extra_body", "user", "metadata"}
)
# The SDKs' marker for `with_raw_response` / `with_streaming_response` calls, which return an HTTP
# response object instead of the parsed result: those calls are passed through untouched.
RAW_RESPONSE_HEADER = "x-stainless-raw-response"

OPENAI_CHAT = "openai-chat"
OPENAI_RESPONSES = "openai-responses"
ANTHROPIC_MESSAGES = "anthropic-messages"

# (attribute path from the client, method, API, True when the method returns a stream manager)
_TARGETS = {
    "openai": (
        (("chat", "completions"), "create", OPENAI_CHAT, False),
        (("chat", "completions"), "parse", OPENAI_CHAT, False),
        (("responses",), "create", OPENAI_RESPONSES, False),
        (("responses",), "parse", OPENAI_RESPONSES, False),
        # Not `beta.chat.completions`: reaching `client.beta` imports seconds' worth of modules,
        # and the same calls are available (and instrumented) without `beta.`.
    ),
    "anthropic": (
        (("messages",), "create", ANTHROPIC_MESSAGES, False),
        (("messages",), "parse", ANTHROPIC_MESSAGES, False),
        (("messages",), "stream", ANTHROPIC_MESSAGES, True),
        (("beta", "messages"), "create", ANTHROPIC_MESSAGES, False),
        (("beta", "messages"), "parse", ANTHROPIC_MESSAGES, False),
        (("beta", "messages"), "stream", ANTHROPIC_MESSAGES, True),
    ),
}
_WRAPPED_MARK = "_chargeback_original"
_WATCHER_ATTRIBUTE = "_chargeback_watcher"

Client = TypeVar("Client")


def instrument(
    client: Client,
    reporter: Reporter,
    *,
    tenant: str | None = None,
    tags: Mapping[str, str] | None = None,
    provider: str | None = None,
    hash_prompts: bool = False,
) -> Client:
    """Make `client` (an `openai.OpenAI`/`AsyncOpenAI` or `anthropic.Anthropic`/`AsyncAnthropic`,
    or a subclass such as `AzureOpenAI`) report every model call to `reporter`; returns the client.

    Each call reports one record: a new event_id, the call's start time, `provider` (by default
    from the client's class: openai, azure, anthropic, aws for Bedrock, google for Vertex), the
    model the response names, the provider's raw usage object, latency and status, `tenant`, and
    tags: the reporter's, then `tags` here, then enclosing `chargeback_client.tags(...)` blocks,
    then the call's own `chargeback_tags={...}` keyword (later ones win). A call's
    `chargeback_tenant="..."` keyword or an enclosing `chargeback_client.tenant(...)` block picks
    its tenant. With `hash_prompts`, each record carries a `prompt_hash` (SHA-256 of the request's
    model, messages and parameters, never the prompt itself) so the service can find repeated
    prompts; a call's `chargeback_prompt_hash="..."` keyword gives one of your own instead.
    Instrumenting a client twice changes nothing. Raises TypeError for other objects.
    """
    family = _sdk_family(client)
    if family is None:
        raise TypeError(
            f"instrument() takes an OpenAI or Anthropic SDK client, not {type(client).__module__}."
            f"{type(client).__qualname__}"
        )
    defaults_tags, problems = clean_tags(tags or {})
    if problems:
        logger.warning("chargeback instrument(): tags adjusted: %s", "; ".join(problems))
    defaults = _Defaults(
        reporter=reporter,
        provider=provider or _provider_of(client, family),
        tenant=tenant,
        tags=defaults_tags,
        hash_prompts=hash_prompts,
    )
    for path, method_name, api, returns_manager in _TARGETS[family]:
        resource: Any = client
        for name in path:
            resource = getattr(resource, name, None)
        original = getattr(resource, method_name, None)
        if original is None:
            continue  # an SDK version without this API
        if hasattr(original, _WRAPPED_MARK):
            logger.warning("chargeback instrument(): %r is already instrumented; left as it is", client)
            return client
        if returns_manager:
            wrapper = _wrap_stream_manager_method(original, defaults, api)
        elif inspect.iscoroutinefunction(inspect.unwrap(original)):
            wrapper = _wrap_async_method(original, defaults, api)
        else:
            wrapper = _wrap_sync_method(original, defaults, api)
        setattr(wrapper, _WRAPPED_MARK, original)
        # An instance attribute shadows the class's method for this client only; the SDK's own
        # helpers that call `self.create` (OpenAI's `.stream()`) go through it too.
        setattr(resource, method_name, wrapper)
    return client


@dataclass(slots=True)
class _Defaults:
    reporter: Reporter
    provider: str
    tenant: str | None
    tags: dict[str, str]
    # Turned off for good when the endpoint refuses `stream_options` (an OpenAI-compatible server
    # or an old Azure API version): those streams then go unreported rather than failing.
    ask_for_stream_usage: bool = True
    hash_prompts: bool = False


def _sdk_family(client: object) -> str | None:
    for klass in type(client).__mro__:
        root = klass.__module__.partition(".")[0]
        if root in _TARGETS:
            return root
    return None


def _provider_of(client: object, family: str) -> str:
    """The genai-prices provider id that bills the calls this client makes."""
    class_names = " ".join(klass.__name__ for klass in type(client).__mro__)
    if family == "openai":
        return "azure" if "Azure" in class_names else "openai"
    if "Bedrock" in class_names:
        return "aws"
    if "Vertex" in class_names:
        return "google"
    return "anthropic"


# --- one call ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    """What is known about one LLM call, from its start to its record."""

    defaults: _Defaults
    api: str
    requested_model: str | None
    tenant: str | None
    tags: dict[str, str]
    timestamp: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    started: float = field(default_factory=time.perf_counter)
    prompt_hash: str | None = None

    def report(
        self, *, model: str | None, usage: dict[str, Any] | None, response_id: Any, status: str
    ) -> None:
        """Queue the call's record; a call whose usage is unknown is only counted. Never raises."""
        try:
            if usage is None:
                self.defaults.reporter.count_call_without_usage()
                return
            record: dict[str, Any] = {
                "event_id": _event_id(response_id),
                "timestamp": self.timestamp,
                "provider": self.defaults.provider,
                "model": model or self.requested_model or "unknown",
                "usage": usage,
                "latency_ms": max(0, round((time.perf_counter() - self.started) * 1000)),
                "status": status,
                "tags": self.tags,
            }
            if self.tenant is not None:
                record["tenant"] = self.tenant
            if self.prompt_hash is not None:
                record["prompt_hash"] = self.prompt_hash
            self.defaults.reporter.report(record)
        except Exception:
            logger.exception("chargeback: could not report an LLM call")


def request_prompt_hash(kwargs: Mapping[str, Any]) -> str | None:
    """The "sha256:<hex>" of a request's keywords as canonical JSON (sorted keys), leaving out those that
    do not change the answer (streaming, timeouts, headers); equal requests get equal hashes. None
    when the keywords cannot be written as JSON."""
    try:
        canonical = json.dumps(
            {name: value for name, value in kwargs.items() if name not in _NOT_IN_PROMPT_HASH},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=_json_default,
        )
    except (TypeError, ValueError):
        return None
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _json_default(value: Any) -> Any:
    # Pydantic models (structured output formats, typed messages) as their data; nothing else.
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, type) and callable(getattr(value, "model_json_schema", None)):
        return value.model_json_schema()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _event_id(response_id: Any) -> str:
    # The provider's id makes a record easy to find in the provider's logs; the uuid keeps ids
    # unique when an OpenAI-compatible server reuses ids.
    suffix = uuid.uuid4().hex
    if isinstance(response_id, str) and response_id:
        return f"{response_id[:100]}.{suffix}"
    return suffix


_ABSENT = object()


@dataclass(slots=True)
class _Prepared:
    """One call about to be made: its record-to-be (None: pass the call through unobserved), and
    whether `stream_options` was added to the SDK keywords on the caller's behalf."""

    call: _Call | None
    hide_usage_chunk: bool = False
    callers_stream_options: Any = _ABSENT

    def refused_stream_usage(self, error: Exception) -> bool:
        """Whether `error` is the endpoint refusing the `stream_options` added here."""
        return (
            self.hide_usage_chunk
            and getattr(error, "status_code", None) in (400, 422)
            and "stream_options" in str(error)
        )

    def withdraw_stream_usage(self, defaults: _Defaults, kwargs: dict[str, Any]) -> None:
        """Give the caller's `stream_options` back, and stop asking this endpoint for usage."""
        defaults.ask_for_stream_usage = False
        self.hide_usage_chunk = False
        if self.callers_stream_options is _ABSENT:
            kwargs.pop("stream_options", None)
        else:
            kwargs["stream_options"] = self.callers_stream_options
        logger.warning(
            "chargeback: the endpoint refused stream_options.include_usage; streamed chat calls of "
            "this client are not reported from now on"
        )


def _prepare_call(defaults: _Defaults, api: str, kwargs: dict[str, Any]) -> _Prepared:
    """Take our keywords out of `kwargs`, and prepare the call's record; never raises.

    OpenAI Chat Completions streams carry usage only when asked (`stream_options.include_usage`),
    in one extra final chunk with empty `choices`. When the caller did not ask, it is asked for
    here, and that chunk is taken out of what the caller iterates: the caller sees the stream it
    would have seen without instrumentation.
    """
    # Removed first and unconditionally: the SDK would reject them even if reporting is broken.
    call_tags = kwargs.pop(TAGS_KEYWORD, None)
    call_tenant = kwargs.pop(TENANT_KEYWORD, None)
    call_prompt_hash = kwargs.pop(PROMPT_HASH_KEYWORD, None)
    try:
        extra_headers = kwargs.get("extra_headers")
        if isinstance(extra_headers, Mapping) and any(
            str(name).lower() == RAW_RESPONSE_HEADER for name in extra_headers
        ):
            return _Prepared(call=None)
        tags = {**defaults.tags, **current_tags()}
        if isinstance(call_tags, Mapping):
            tags.update(call_tags)
        tags, problems = clean_tags(tags)
        if problems:
            logger.debug("chargeback: tags adjusted: %s", "; ".join(problems))
        model = kwargs.get("model")
        prepared = _Prepared(
            call=_Call(
                defaults=defaults,
                api=api,
                requested_model=model if isinstance(model, str) else None,
                tenant=call_tenant if isinstance(call_tenant, str) else (current_tenant() or defaults.tenant),
                tags=tags,
                prompt_hash=call_prompt_hash
                if isinstance(call_prompt_hash, str)
                else (request_prompt_hash(kwargs) if defaults.hash_prompts else None),
            )
        )
        if api == OPENAI_CHAT and kwargs.get("stream") is True and defaults.ask_for_stream_usage:
            options = kwargs.get("stream_options", _ABSENT)
            given = dict(options) if isinstance(options, Mapping) else {}
            if not given.get("include_usage"):
                prepared.callers_stream_options = options
                prepared.hide_usage_chunk = True
                kwargs["stream_options"] = {**given, "include_usage": True}
        return prepared
    except Exception:
        logger.exception("chargeback: could not prepare the report of an LLM call")
        return _Prepared(call=None)


def _wrap_sync_method(original: Callable[..., Any], defaults: _Defaults, api: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def reporting_call(*args: Any, **kwargs: Any) -> Any:
        prepared = _prepare_call(defaults, api, kwargs)
        try:
            try:
                result = original(*args, **kwargs)
            except Exception as error:
                if not prepared.refused_stream_usage(error):
                    raise
                # Refused before anything was generated (not billed): make the caller's own call.
                prepared.withdraw_stream_usage(defaults, kwargs)
                result = original(*args, **kwargs)
        except Exception:
            if prepared.call is not None:
                prepared.call.report(model=None, usage=None, response_id=None, status="error")
            raise
        return _observe_result(prepared, result, kwargs)

    return reporting_call


def _wrap_async_method(original: Callable[..., Any], defaults: _Defaults, api: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def reporting_call(*args: Any, **kwargs: Any) -> Any:
        prepared = _prepare_call(defaults, api, kwargs)
        try:
            try:
                result = await original(*args, **kwargs)
            except Exception as error:
                if not prepared.refused_stream_usage(error):
                    raise
                prepared.withdraw_stream_usage(defaults, kwargs)
                result = await original(*args, **kwargs)
        except Exception:
            if prepared.call is not None:
                prepared.call.report(model=None, usage=None, response_id=None, status="error")
            raise
        return _observe_result(prepared, result, kwargs)

    return reporting_call


def _wrap_stream_manager_method(
    original: Callable[..., Any], defaults: _Defaults, api: str
) -> Callable[..., Any]:
    """Anthropic's `messages.stream()`: the request is made when the returned manager is entered."""

    @functools.wraps(original)
    def reporting_call(*args: Any, **kwargs: Any) -> Any:
        call = _prepare_call(defaults, api, kwargs).call
        manager = original(*args, **kwargs)
        if call is not None and (hasattr(type(manager), "__enter__") or hasattr(type(manager), "__aenter__")):
            try:
                _attach(manager, _StreamWatcher(call, hide_usage_chunk=False), finalize=False)
            except Exception:
                logger.exception("chargeback: could not watch a stream; its usage is not reported")
        return manager

    return reporting_call


def _observe_result(prepared: _Prepared, result: Any, kwargs: Mapping[str, Any]) -> Any:
    """The SDK's result, returned as it is (a stream: being watched); never raises."""
    call = prepared.call
    if call is None:
        return result
    try:
        if kwargs.get("stream") is True and _is_stream(result):
            watcher = _StreamWatcher(call, hide_usage_chunk=prepared.hide_usage_chunk)
            _attach(result, watcher, finalize=True)
            return result
        call.report(
            model=getattr(result, "model", None),
            usage=_usage_dict(getattr(result, "usage", None)),
            response_id=getattr(result, "id", None),
            status="ok",
        )
    except Exception:
        logger.exception("chargeback: could not report an LLM call")
    return result


def _is_stream(result: Any) -> bool:
    return hasattr(type(result), "__next__") or hasattr(type(result), "__anext__")


def _usage_dict(usage: Any) -> dict[str, Any] | None:
    if usage is None:
        return None
    if isinstance(usage, Mapping):
        return dict(usage)
    return usage.model_dump(mode="json")


# --- streams -----------------------------------------------------------------------------------------


class _StreamWatcher:
    """Reads usage, model and id from a stream's events as the caller iterates them, and reports
    the call once: when the stream is exhausted, raises, is closed, or is garbage-collected."""

    def __init__(self, call: _Call, *, hide_usage_chunk: bool) -> None:
        self._call = call
        self._hide_usage_chunk = hide_usage_chunk
        # Reentrant: the garbage collector may finalize a dropped stream on a thread that is
        # already inside finish().
        self._lock = threading.RLock()
        self._finished = False
        self.model: str | None = None
        self.response_id: Any = None
        self.usage: dict[str, Any] | None = None
        self.failed = False

    def restart_clock(self) -> None:
        """The request starts now (a stream manager was entered)."""
        self._call.started = time.perf_counter()

    def see(self, item: Any) -> bool:
        """Take note of one stream item; True when the caller must not see it. Never raises."""
        try:
            if self._call.api == OPENAI_CHAT:
                return self._see_chat_chunk(item)
            if self._call.api == OPENAI_RESPONSES:
                self._see_responses_event(item)
            else:
                self._see_anthropic_event(item)
        except Exception:
            logger.exception("chargeback: could not read a stream event")
        return False

    def _see_chat_chunk(self, chunk: Any) -> bool:
        self.model = getattr(chunk, "model", None) or self.model
        self.response_id = getattr(chunk, "id", None) or self.response_id
        usage = getattr(chunk, "usage", None)
        if usage is None:
            return False
        self.usage = _usage_dict(usage)
        return self._hide_usage_chunk and not getattr(chunk, "choices", None)

    def _see_responses_event(self, event: Any) -> None:
        # response.created / in_progress / completed / incomplete / failed all carry the response;
        # usage is set on the last three (an incomplete response is billed like a complete one).
        if getattr(event, "type", None) == "error":
            self.failed = True
        response = getattr(event, "response", None)
        if response is None:
            return
        self.model = getattr(response, "model", None) or self.model
        self.response_id = getattr(response, "id", None) or self.response_id
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.usage = _usage_dict(usage)
        if getattr(event, "type", None) == "response.failed":
            self.failed = True

    def _see_anthropic_event(self, event: Any) -> None:
        # message_start carries the whole usage as it stands (input and cache tokens, output so
        # far); each message_delta carries running totals of what changed (output tokens, and on
        # newer API versions input and cache tokens too), so its non-null fields overwrite.
        kind = getattr(event, "type", None)
        if kind == "message_start":
            message = event.message
            self.model = getattr(message, "model", None) or self.model
            self.response_id = getattr(message, "id", None) or self.response_id
            if message.usage is not None:
                self.usage = _usage_dict(message.usage)
        elif kind == "message_delta" and getattr(event, "usage", None) is not None:
            self.usage = {**(self.usage or {}), **event.usage.model_dump(mode="json", exclude_none=True)}

    def finish(self, status: str) -> None:
        """Report the call, once; later calls do nothing. Never raises."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self._call.report(
            model=self.model,
            usage=self.usage,
            response_id=self.response_id,
            status="error" if self.failed else status,
        )


class _NoWatcher:
    """Stands in on a copy of a watched stream that lost its watcher (never expected)."""

    def see(self, item: Any) -> bool:
        return False

    def finish(self, status: str) -> None:
        pass

    def restart_clock(self) -> None:
        pass


_NO_WATCHER = _NoWatcher()
_watching_classes: dict[type, type] = {}
_watching_classes_lock = threading.Lock()


def _watcher_of(stream: object) -> _StreamWatcher | _NoWatcher:
    return getattr(stream, _WATCHER_ATTRIBUTE, _NO_WATCHER)


def _attach(target: Any, watcher: _StreamWatcher, *, finalize: bool) -> None:
    """Make `target` (a stream or a stream manager) report through `watcher`, in place."""
    watching_class = _watching_class(type(target))
    setattr(target, _WATCHER_ATTRIBUTE, watcher)
    target.__class__ = watching_class
    if finalize:
        # A stream the caller drops without reading to the end or closing is still reported, with
        # what was seen of it. The watcher holds no reference to the stream, so this cannot keep
        # the stream alive; at interpreter exit the reporter is already gone, so do not run then.
        weakref.finalize(target, watcher.finish, "ok").atexit = False


def _watching_class(base: type) -> type:
    """A subclass of the SDK's stream (or stream manager) class that reports through its watcher."""
    with _watching_classes_lock:
        watching_class = _watching_classes.get(base)
        if watching_class is None:
            watching_class = _make_watching_class(base)
            _watching_classes[base] = watching_class
        return watching_class


def _make_watching_class(base: type) -> type:
    if hasattr(base, "__aenter__") and not hasattr(base, "__anext__"):
        return _make_async_manager_class(base)
    if hasattr(base, "__anext__"):
        return _make_async_stream_class(base)
    if hasattr(base, "__next__"):
        return _make_sync_stream_class(base)
    return _make_sync_manager_class(base)


def _make_sync_stream_class(base: Any) -> type:
    class WatchedStream(base):
        def __next__(self) -> Any:
            watcher = _watcher_of(self)
            while True:
                try:
                    item = super().__next__()
                except StopIteration:
                    watcher.finish("ok")
                    raise
                except Exception:
                    watcher.finish("error")
                    raise
                if not watcher.see(item):
                    return item

        def __iter__(self) -> Any:
            watcher = _watcher_of(self)
            try:
                for item in super().__iter__():
                    if not watcher.see(item):
                        yield item
            except Exception:
                watcher.finish("error")
                raise
            watcher.finish("ok")

        def close(self) -> Any:
            try:
                return super().close()
            finally:
                _watcher_of(self).finish("ok")

    WatchedStream.__name__ = WatchedStream.__qualname__ = f"Watched{base.__name__}"
    return WatchedStream


def _make_async_stream_class(base: Any) -> type:
    class WatchedAsyncStream(base):
        async def __anext__(self) -> Any:
            watcher = _watcher_of(self)
            while True:
                try:
                    item = await super().__anext__()
                except StopAsyncIteration:
                    watcher.finish("ok")
                    raise
                except Exception:
                    watcher.finish("error")
                    raise
                if not watcher.see(item):
                    return item

        async def __aiter__(self) -> Any:
            watcher = _watcher_of(self)
            try:
                async for item in super().__aiter__():
                    if not watcher.see(item):
                        yield item
            except Exception:
                watcher.finish("error")
                raise
            watcher.finish("ok")

        async def close(self) -> Any:
            try:
                return await super().close()
            finally:
                _watcher_of(self).finish("ok")

    WatchedAsyncStream.__name__ = WatchedAsyncStream.__qualname__ = f"Watched{base.__name__}"
    return WatchedAsyncStream


def _make_sync_manager_class(base: Any) -> type:
    class WatchedStreamManager(base):
        def __enter__(self) -> Any:
            watcher = _watcher_of(self)
            watcher.restart_clock()
            try:
                stream = super().__enter__()
            except Exception:
                watcher.finish("error")
                raise
            _attach_or_log(stream, watcher)
            return stream

    WatchedStreamManager.__name__ = WatchedStreamManager.__qualname__ = f"Watched{base.__name__}"
    return WatchedStreamManager


def _make_async_manager_class(base: Any) -> type:
    class WatchedAsyncStreamManager(base):
        async def __aenter__(self) -> Any:
            watcher = _watcher_of(self)
            watcher.restart_clock()
            try:
                stream = await super().__aenter__()
            except Exception:
                watcher.finish("error")
                raise
            _attach_or_log(stream, watcher)
            return stream

    WatchedAsyncStreamManager.__name__ = WatchedAsyncStreamManager.__qualname__ = f"Watched{base.__name__}"
    return WatchedAsyncStreamManager


def _attach_or_log(stream: Any, watcher: _StreamWatcher | _NoWatcher) -> None:
    if isinstance(watcher, _NoWatcher):
        return
    try:
        _attach(stream, watcher, finalize=True)
    except Exception:
        logger.exception("chargeback: could not watch a stream; its usage is not reported")
