"""The OpenAI wire format, built from the `openai` package's own types.

Building responses from `ChatCompletion` / `ChatCompletionChunk` (pydantic models the
official client parses with) means a field we send is a field the client knows, with
the type it expects: a misspelt field or a wrong `finish_reason` fails here, in our
tests, not in a user's client.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.shared import ErrorObject

from core.model import Usage

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"


def completion(ident: str, model: str, text: str, usage: Usage | None = None) -> bytes:
    """A whole `chat.completion` (the JSON answer of a non-streamed request); `usage` when
    the agent reported it."""
    body = ChatCompletion(
        id=ident,
        object="chat.completion",
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                index=0,
                message=ChatCompletionMessage(role="assistant", content=text),
                finish_reason="stop",
                logprobs=None,
            )
        ],
    )
    if usage is not None:
        body.usage = _usage(usage)
    return body.model_dump_json(exclude_unset=True).encode()


def usage_chunk(ident: str, model: str, usage: Usage | None) -> bytes:
    """The last chunk of a stream that asked for `stream_options.include_usage`: no choices,
    the answer's `usage` (null when the agent did not report it)."""
    body = ChatCompletionChunk(
        id=ident, object="chat.completion.chunk", created=int(time.time()), model=model, choices=[]
    )
    body.usage = _usage(usage) if usage is not None else None
    return event(body.model_dump_json(exclude_unset=True))


def _usage(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def chunk(
    ident: str, model: str, content: str | None = None, *, first: bool = False, finish: bool = False
) -> bytes:
    """One SSE `chat.completion.chunk` event: a piece of content, or the finish chunk."""
    delta = ChoiceDelta(role="assistant") if first else ChoiceDelta()
    if content is not None:
        delta.content = content
    body = ChatCompletionChunk(
        id=ident,
        object="chat.completion.chunk",
        created=int(time.time()),
        model=model,
        choices=[ChunkChoice(index=0, delta=delta, finish_reason="stop" if finish else None, logprobs=None)],
    )
    return event(body.model_dump_json(exclude_unset=True))


def error_object(message: str, kind: str, code: str | None, param: str | None = None) -> ErrorObject:
    return ErrorObject(message=message, type=kind, param=param, code=code)


def error_body(err: ErrorObject) -> bytes:
    """`{"error": {...}}`: the body of an error response, and of an in-stream error event."""
    return b'{"error":' + err.model_dump_json().encode() + b"}"


def error_event(err: ErrorObject) -> bytes:
    return b"data: " + error_body(err) + b"\n\n"


def event(data: str) -> bytes:
    return b"data: " + data.encode() + b"\n\n"


def model(agent_id: str) -> Model:
    return Model(id=agent_id, object="model", created=0, owned_by="chatlane")


def model_list(agent_ids: Sequence[str]) -> bytes:
    data = b",".join(model(a).model_dump_json().encode() for a in agent_ids)
    return b'{"object":"list","data":[' + data + b"]}"
