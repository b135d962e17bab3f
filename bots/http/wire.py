"""The OpenAI wire format: the JSON bodies and SSE events the API answers with.

Built as plain dicts, field for field the shapes of the `openai` package's
`ChatCompletion`, `ChatCompletionChunk`, `Model` and `ErrorObject`, not with those
pydantic models: importing `openai.types` imports the whole client (about 780 modules
and 28 MB of memory in a process that may never call a model). tests/bots/test_http_wire.py
checks every body here against those models, and the official client parses them in
the HTTP tests, so a misspelt field or a wrong `finish_reason` still fails in our tests,
not in a user's client.

Text an agent made is sent as it is; a lone surrogate in it (which UTF-8 cannot carry)
becomes "?" rather than failing the answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.model import Usage

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class ErrorObject:
    """OpenAI's error object: `{"error": {...}}` holds one."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def comment(line: str) -> bytes:
    """An SSE comment line: the tool status, which OpenAI clients skip (the SSE spec
    says a line starting with ":" is ignored)."""
    return b": " + line.replace("\n", " ").encode("utf-8", "replace") + b"\n\n"


def completion(ident: str, model: str, text: str, usage: Usage | None = None) -> bytes:
    """A whole `chat.completion` (the JSON answer of a non-streamed request); `usage` when
    the agent reported it."""
    body: dict[str, Any] = {
        "id": ident,
        "choices": [
            {
                "finish_reason": "stop",
                "index": 0,
                "logprobs": None,
                "message": {"content": text, "role": "assistant"},
            }
        ],
        "created": int(time.time()),
        "model": model,
        "object": "chat.completion",
    }
    if usage is not None:
        body["usage"] = _usage(usage)
    return _json(body)


def usage_chunk(ident: str, model: str, usage: Usage | None) -> bytes:
    """The last chunk of a stream that asked for `stream_options.include_usage`: no choices,
    the answer's `usage` (null when the agent did not report it)."""
    return _event(_chunk(ident, model, [], usage=_usage(usage) if usage is not None else None))


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "completion_tokens": usage.completion_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "total_tokens": usage.total_tokens,
    }


def _chunk(ident: str, model: str, choices: list[dict[str, Any]], **usage: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "choices": choices,
        "created": int(time.time()),
        "model": model,
        "object": "chat.completion.chunk",
        **usage,
    }


def chunk(
    ident: str, model: str, content: str | None = None, *, first: bool = False, finish: bool = False
) -> bytes:
    """One SSE `chat.completion.chunk` event: a piece of content, or the finish chunk."""
    delta: dict[str, str] = {}
    if content is not None:
        delta["content"] = content
    if first:
        delta["role"] = "assistant"
    choice = {"delta": delta, "finish_reason": "stop" if finish else None, "index": 0, "logprobs": None}
    return _event(_chunk(ident, model, [choice]))


def error_object(message: str, kind: str, code: str | None, param: str | None = None) -> ErrorObject:
    return ErrorObject(message=message, type=kind, param=param, code=code)


def error_body(err: ErrorObject) -> bytes:
    """`{"error": {...}}`: the body of an error response, and of an in-stream error event."""
    return _json({"error": {"code": err.code, "message": err.message, "param": err.param, "type": err.type}})


def error_event(err: ErrorObject) -> bytes:
    return b"data: " + error_body(err) + b"\n\n"


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + _json(body) + b"\n\n"


def model(agent_id: str) -> bytes:
    """One `model` object (GET /v1/models/{id})."""
    return _json(_model(agent_id))


def _model(agent_id: str) -> dict[str, Any]:
    return {"id": agent_id, "created": 0, "object": "model", "owned_by": "chatlane"}


def model_list(agent_ids: Sequence[str]) -> bytes:
    return _json({"object": "list", "data": [_model(a) for a in agent_ids]})
