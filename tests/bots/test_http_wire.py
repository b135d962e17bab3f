"""The API's wire bodies are, field for field, what the `openai` package's own models make
(what the official client parses with), and building them does not import that package."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.shared import ErrorObject

from bots.http import wire
from core.model import Usage

USAGE = Usage(prompt_tokens=7, completion_tokens=5)


def _sse(event: bytes) -> dict[str, Any]:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    parsed: dict[str, Any] = json.loads(event[len(b"data: ") : -2])
    return parsed


def _theirs(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = json.loads(model.model_dump_json(exclude_unset=True))
    return dumped


def _usage() -> CompletionUsage:
    return CompletionUsage(prompt_tokens=7, completion_tokens=5, total_tokens=12)


@pytest.mark.parametrize("usage", [None, USAGE], ids=["no-usage", "usage"])
@pytest.mark.parametrize("text", ["hello", "", 'héllo ✓ "quoted" \n new line'])
def test_a_completion_is_what_openai_types_make(text: str, usage: Usage | None) -> None:
    ours = json.loads(wire.completion("chatcmpl-1", "main", text, usage))
    theirs = ChatCompletion(
        id="chatcmpl-1",
        object="chat.completion",
        created=ours["created"],
        model="main",
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
        theirs.usage = _usage()
    assert ours == _theirs(theirs)
    assert ChatCompletion.model_validate(ours).choices[0].message.content == text


@pytest.mark.parametrize(
    ("content", "first", "finish"),
    [("piece", False, False), ("first piece", True, False), (None, True, False), (None, False, True)],
    ids=["piece", "first", "role-only", "finish"],
)
def test_a_chunk_is_what_openai_types_make(content: str | None, first: bool, finish: bool) -> None:
    ours = _sse(wire.chunk("chatcmpl-1", "main", content, first=first, finish=finish))
    delta = ChoiceDelta(role="assistant") if first else ChoiceDelta()
    if content is not None:
        delta.content = content
    theirs = ChatCompletionChunk(
        id="chatcmpl-1",
        object="chat.completion.chunk",
        created=ours["created"],
        model="main",
        choices=[ChunkChoice(index=0, delta=delta, finish_reason="stop" if finish else None, logprobs=None)],
    )
    assert ours == _theirs(theirs)


@pytest.mark.parametrize("usage", [None, USAGE], ids=["null-usage", "usage"])
def test_the_usage_chunk_is_what_openai_types_make(usage: Usage | None) -> None:
    ours = _sse(wire.usage_chunk("chatcmpl-1", "main", usage))
    theirs = ChatCompletionChunk(
        id="chatcmpl-1", object="chat.completion.chunk", created=ours["created"], model="main", choices=[]
    )
    theirs.usage = _usage() if usage is not None else None
    assert ours == _theirs(theirs)


@pytest.mark.parametrize(("code", "param"), [("bad_thing", None), (None, "messages")])
def test_an_error_body_is_what_openai_types_make(code: str | None, param: str | None) -> None:
    ours = json.loads(wire.error_body(wire.error_object("it broke", "invalid_request_error", code, param)))
    theirs = ErrorObject(message="it broke", type="invalid_request_error", param=param, code=code)
    assert ours == {"error": json.loads(theirs.model_dump_json())}
    assert _sse(wire.error_event(wire.error_object("it broke", "invalid_request_error", code, param))) == ours


def test_models_are_what_openai_types_make() -> None:
    def theirs(agent: str) -> dict[str, Any]:
        return _theirs(Model(id=agent, object="model", created=0, owned_by="chatlane"))

    assert json.loads(wire.model("main")) == theirs("main")
    assert json.loads(wire.model_list(["main", "b"])) == {
        "object": "list",
        "data": [theirs("main"), theirs("b")],
    }


def test_a_lone_surrogate_in_an_answer_is_replaced_not_a_failed_answer() -> None:
    body = json.loads(wire.completion("chatcmpl-1", "main", "a\ud800b"))
    assert body["choices"][0]["message"]["content"] == "a?b"
    assert _sse(wire.chunk("chatcmpl-1", "main", "c\udfffd"))["choices"][0]["delta"]["content"] == "c?d"


def test_serving_the_api_does_not_import_the_openai_package() -> None:
    """About 780 modules and 28 MB of memory for a server whose agent may never call OpenAI."""
    code = (
        "import sys; import bots.http.service, bots.__main__, core.agents.echo; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'openai'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
