"""Loopback HTTP servers for the client tests: a stub LLM API speaking OpenAI's and Anthropic's wire
formats, and an ingest relay that stands between the reporter and the live chargeback service.

The response bodies follow what the providers send (field for field, as in their API references),
so that the real SDKs parse them as they would parse the real thing.
"""

from __future__ import annotations

import gzip
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Requested model -> (model the response names, usage), per API.
CHAT_MODELS = {
    "gpt-4o-mini": (
        "gpt-4o-mini-2024-07-18",
        {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    ),
    "o4-mini": (
        "o4-mini-2025-04-16",
        {
            "prompt_tokens": 1200,
            "completion_tokens": 900,
            "total_tokens": 2100,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 640,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    ),
}
RESPONSES_MODELS = {
    "o4-mini": (
        "o4-mini-2025-04-16",
        {
            "input_tokens": 1500,
            "input_tokens_details": {"cached_tokens": 1280, "cache_write_tokens": 0},
            "output_tokens": 700,
            "output_tokens_details": {"reasoning_tokens": 512},
            "total_tokens": 2200,
        },
    ),
}
ANTHROPIC_MODELS = {
    "claude-haiku-4-5": (
        "claude-haiku-4-5-20251001",
        {
            "input_tokens": 42,
            "cache_creation_input_tokens": 1800,
            "cache_read_input_tokens": 12000,
            "cache_creation": {"ephemeral_5m_input_tokens": 1800, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 350,
            "service_tier": "standard",
        },
    ),
}
REPLY_WORDS = ["The ", "ledger ", "balances."]
REPLY_TEXT = "".join(REPLY_WORDS)
SCENARIO_HEADER = "X-Stub-Scenario"


def _sse(events: list[tuple[str | None, Any]]) -> bytes:
    lines = []
    for name, data in events:
        if name is not None:
            lines.append(f"event: {name}")
        lines.append(f"data: {data if isinstance(data, str) else json.dumps(data)}")
        lines.append("")
    return ("\n".join(lines) + "\n").encode()


def chat_completion(model: str) -> dict[str, Any]:
    response_model, usage = CHAT_MODELS[model]
    return {
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1_762_000_000,
        "model": response_model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY_TEXT, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }


def chat_completion_stream(model: str, *, include_usage: bool) -> bytes:
    response_model, usage = CHAT_MODELS[model]
    base = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1_762_000_000,
        "model": response_model,
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }
    # With include_usage, every chunk says "usage": null and one last chunk with no choices has it.
    no_usage = {"usage": None} if include_usage else {}
    deltas = [{"role": "assistant", "content": "", "refusal": None}] + [
        {"content": word} for word in REPLY_WORDS
    ]
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
            **no_usage,
        }
        for delta in deltas
    ]
    chunks.append(
        {
            **base,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
            **no_usage,
        }
    )
    if include_usage:
        chunks.append({**base, "choices": [], "usage": usage})
    return _sse([(None, chunk) for chunk in chunks] + [(None, "[DONE]")])


def _response_object(model: str, *, completed: bool) -> dict[str, Any]:
    response_model, usage = RESPONSES_MODELS[model]
    message = {
        "type": "message",
        "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": REPLY_TEXT, "annotations": []}],
    }
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1_762_000_000,
        "status": "completed" if completed else "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": response_model,
        "output": [{"type": "reasoning", "id": "rs_67ccd2bf17f0819081ff3bb2", "summary": []}, message]
        if completed
        else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage if completed else None,
        "user": None,
        "metadata": {},
    }


def response(model: str) -> dict[str, Any]:
    return _response_object(model, completed=True)


def response_stream(model: str) -> bytes:
    in_progress = _response_object(model, completed=False)
    completed = _response_object(model, completed=True)
    item_id = completed["output"][1]["id"]
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": in_progress}),
        ("response.in_progress", {"response": in_progress}),
        (
            "response.output_item.added",
            {
                "output_index": 1,
                "item": {
                    "type": "message",
                    "id": item_id,
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            },
        ),
        (
            "response.content_part.added",
            {
                "item_id": item_id,
                "output_index": 1,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        ),
        *[
            (
                "response.output_text.delta",
                {"item_id": item_id, "output_index": 1, "content_index": 0, "delta": word, "logprobs": []},
            )
            for word in REPLY_WORDS
        ],
        (
            "response.output_text.done",
            {"item_id": item_id, "output_index": 1, "content_index": 0, "text": REPLY_TEXT, "logprobs": []},
        ),
        ("response.output_item.done", {"output_index": 1, "item": completed["output"][1]}),
        ("response.completed", {"response": completed}),
    ]
    return _sse(
        [
            (name, {"type": name, "sequence_number": number, **data})
            for number, (name, data) in enumerate(events)
        ]
    )


def anthropic_message(model: str) -> dict[str, Any]:
    response_model, usage = ANTHROPIC_MODELS[model]
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": response_model,
        "content": [{"type": "text", "text": REPLY_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_message_stream(model: str, *, fail_midway: bool = False) -> bytes:
    response_model, usage = ANTHROPIC_MODELS[model]
    # message_start has the input side of the usage and the output so far; message_delta the output.
    start_usage = {**usage, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                    "type": "message",
                    "role": "assistant",
                    "model": response_model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
    ]
    words = REPLY_WORDS[:1] if fail_midway else REPLY_WORDS
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
        )
        for word in words
    ]
    if fail_midway:
        events.append(
            ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        )
        return _sse(events)
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _sse(events)


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: Any


class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body

    def _answer(
        self, status: int, body: bytes, content_type: str = "application/json", **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


class StubLLM:
    """OpenAI (`/v1/chat/completions`, `/v1/responses`) and Anthropic (`/v1/messages`) on loopback.

    A request for the model "error" gets a 400 in the provider's error format. The header
    X-Stub-Scenario: fail-midway makes an Anthropic stream end in an `error` event;
    X-Stub-Scenario: no-stream-options makes chat completions refuse `stream_options` (as some
    OpenAI-compatible servers do).
    """

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        stub = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                payload = json.loads(self._read_body() or b"{}")
                stub.requests.append(ReceivedRequest(self.path, dict(self.headers), payload))
                model = payload.get("model")
                streaming = payload.get("stream") is True
                if self.path == "/v1/chat/completions":
                    if model not in CHAT_MODELS:
                        return self._openai_error(model)
                    if (
                        "stream_options" in payload
                        and self.headers.get(SCENARIO_HEADER) == "no-stream-options"
                    ):
                        return self._openai_error(
                            model, "Unrecognized request argument supplied: stream_options"
                        )
                    if streaming:
                        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
                        return self._answer(
                            200,
                            chat_completion_stream(model, include_usage=include_usage),
                            "text/event-stream",
                        )
                    return self._answer(200, json.dumps(chat_completion(model)).encode())
                if self.path == "/v1/responses":
                    if model not in RESPONSES_MODELS:
                        return self._openai_error(model)
                    if streaming:
                        return self._answer(200, response_stream(model), "text/event-stream")
                    return self._answer(200, json.dumps(response(model)).encode())
                if self.path == "/v1/messages":
                    if model not in ANTHROPIC_MODELS:
                        error = {
                            "type": "error",
                            "error": {"type": "invalid_request_error", "message": f"model: {model}"},
                        }
                        return self._answer(400, json.dumps(error).encode())
                    if streaming:
                        fail_midway = self.headers.get(SCENARIO_HEADER) == "fail-midway"
                        return self._answer(
                            200, anthropic_message_stream(model, fail_midway=fail_midway), "text/event-stream"
                        )
                    return self._answer(200, json.dumps(anthropic_message(model)).encode())
                return self._answer(404, b'{"error": {"message": "no such path"}}')

            def _openai_error(self, model: Any, message: str | None = None) -> None:
                error = {
                    "error": {
                        "message": message
                        or f"The model `{model}` does not exist or you do not have access to it.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "model_not_found",
                    }
                }
                self._answer(400, json.dumps(error).encode())

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        _serve(self._server)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class RelayedRequest:
    event_ids: list[str]
    status: int


@dataclass
class IngestRelay:
    """An HTTP server between the reporter and the live chargeback service.

    `behaviour(number, event_ids)` decides what the request with that number (from 0) gets:
    "forward" (to the service), "fail" (503 with Retry-After: 0), "too_large" (413), or "hold"
    (wait for `release` to be set, then forward). Every request's event ids are recorded.
    """

    target_url: str
    behaviour: Callable[[int, list[str]], str] = lambda number, event_ids: "forward"
    port: int = 0
    requests: list[RelayedRequest] = field(default_factory=list)
    request_arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        relay = self
        lock = threading.Lock()

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                with lock:
                    number = len(relay.requests)
                    relayed = RelayedRequest([record["event_id"] for record in json.loads(body)], 0)
                    relay.requests.append(relayed)
                relay.request_arrived.set()
                action = relay.behaviour(number, relayed.event_ids)
                if action == "too_large":
                    relayed.status = 413
                    return self._answer(413, b'{"error": {"code": "too_large", "message": "too large"}}')
                if action == "fail":
                    relayed.status = 503
                    return self._answer(
                        503, b'{"error": {"code": "unavailable", "message": "down"}}', Retry_After="0"
                    )
                if action == "hold":
                    relay.release.wait()
                forward = urllib.request.Request(
                    relay.target_url,
                    data=raw,
                    method="POST",
                    headers={
                        name: self.headers[name]
                        for name in ("Authorization", "Content-Type", "Content-Encoding")
                        if self.headers.get(name)
                    },
                )
                try:
                    with urllib.request.urlopen(forward, timeout=30) as answer:
                        status, answer_body = answer.status, answer.read()
                except urllib.error.HTTPError as error:
                    status, answer_body = error.code, error.read()
                relayed.status = status
                self._answer(status, answer_body)

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        _serve(self._server)

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
