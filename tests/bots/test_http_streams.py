"""Streamed answers always end, in every queue mode and for every reply kind; bad input is a 4xx.

Streams are read raw (aiohttp) so a stream that never ends is a timeout here, not a hang.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai.types.chat import ChatCompletionChunk

from bots.http.service import SESSION_HEADER
from bots.testing import eventually
from tests.support.http import Api, serve

END_S = 10.0
"""A stream that has not ended after this long is a stream that never ends."""


def _body(text: str, user: str | None = "u", stream: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "main",
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    if user is not None:
        body["user"] = user
    return body


class Stream:
    """One streamed request as it came over the wire."""

    def __init__(self, status: int, events: list[str], headers: dict[str, str]) -> None:
        self.status, self.events, self.headers = status, events, headers

    @property
    def chunks(self) -> list[ChatCompletionChunk]:
        return [
            ChatCompletionChunk.model_validate_json(e)
            for e in self.events
            if e != "[DONE]" and "error" not in json.loads(e)
        ]

    @property
    def text(self) -> str:
        return "".join(c.choices[0].delta.content or "" for c in self.chunks)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [json.loads(e)["error"] for e in self.events if e != "[DONE]" and "error" in json.loads(e)]

    def assert_ended(self) -> None:
        """A finish chunk, then `[DONE]`, then the end of the response."""
        assert self.events[-1] == "[DONE]", self.events
        assert self.chunks[-1].choices[0].finish_reason == "stop", self.events
        assert [c.choices[0].finish_reason for c in self.chunks[:-1]] == [None] * (len(self.chunks) - 1)


async def stream(
    s: Api, body: dict[str, Any], headers: dict[str, str] | None = None, *, received: bytearray | None = None
) -> Stream:
    """The whole response; `received` (if given) grows as bytes arrive, for a test to poll."""
    got = bytearray() if received is None else received
    async with (
        aiohttp.ClientSession() as http,
        asyncio.timeout(END_S),
        http.post(s.url("/v1/chat/completions"), json=body, headers=headers) as resp,
    ):
        async for piece in resp.content.iter_any():
            got += piece
        raw = bytes(got).decode()
    if resp.content_type != "text/event-stream":
        return Stream(resp.status, [raw], dict(resp.headers))
    events = [line[len("data: ") :] for line in raw.split("\n\n") if line.startswith("data: ")]
    return Stream(resp.status, events, dict(resp.headers))


async def test_a_streamed_reset_command_ends_with_a_finish_chunk_and_done(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        first = await stream(s, _body("hello", user="r"))
        reset = await stream(s, _body("/new", user="r"))
        reset.assert_ended()
        assert reset.text == "Started a new conversation."
        after = await stream(s, _body("again", user="r"))
        after.assert_ended()
        assert "new session" in after.text
        first.assert_ended()


@pytest.mark.parametrize("mode", ["followup", "collect", "interrupt"])
async def test_concurrent_streams_of_one_conversation_all_end_in_every_queue_mode(
    tmp_path: Path, mode: str
) -> None:
    extra = f'[queue]\nmode = "{mode}"\ndebounce_ms = 50'
    async with serve(tmp_path, agent_toml="echo_delay_ms = 300", extra=extra) as s:
        first = asyncio.create_task(stream(s, _body("one", user="c")))
        await eventually(lambda: s.runtime.gateway.lanes.waiting(_key("c"))[1])
        rest = [asyncio.create_task(stream(s, _body(t, user="c"))) for t in ("two", "three")]
        done = await asyncio.gather(first, *rest)
        for d in done:
            d.assert_ended()
        # Whatever the mode, the last message is answered and every answer saw "three".
        assert "three" in done[-1].text


async def test_interrupt_mode_never_streams_a_cut_off_answer_as_final(tmp_path: Path) -> None:
    """s1 is interrupted by s2: the s1 stream ends with the same merged answer a
    non-streaming client gets, never with the cut-off "echo: s1" of the cancelled turn."""
    extra = '[queue]\nmode = "interrupt"'
    async with serve(tmp_path, agent_toml="echo_delay_ms = 1500", extra=extra) as s:
        s1 = asyncio.create_task(stream(s, _body("s1", user="i")))
        await eventually(lambda: s.runtime.gateway.lanes.waiting(_key("i"))[1])
        await asyncio.sleep(0.4)
        async with (
            aiohttp.ClientSession() as http,
            http.post(s.url("/v1/chat/completions"), json=_body("s2", user="i", stream=False)) as r,
        ):
            plain = (await r.json())["choices"][0]["message"]["content"]
        first = await s1
        first.assert_ended()
        assert plain.startswith("echo: s1 / s2")
        assert first.text == plain


async def test_a_stream_cut_off_by_shutdown_ends_with_an_error_a_finish_chunk_and_done(
    tmp_path: Path,
) -> None:
    extra = "[queue]\nshutdown_timeout_s = 0.2"
    async with serve(tmp_path, agent_toml="echo_delay_ms = 5000", extra=extra) as s:
        received = bytearray()
        task = asyncio.create_task(stream(s, _body("slow", user="d"), received=received))
        await eventually(lambda: b"echo: slow" in received)  # the first piece is out
        await s.runtime.gateway.close()
        cut = await task
        assert cut.status == 200
        assert cut.text == "echo: slow"
        assert [e["code"] for e in cut.errors] == ["agent_failed"]
        cut.assert_ended()


async def test_queued_streams_refused_before_their_first_byte_get_a_status(tmp_path: Path) -> None:
    """A full queue is a 429 with Retry-After; shutdown a 503 with Retry-After: never a hang."""
    extra = '[queue]\ncap = 1\ndrop = "newest"'
    async with serve(tmp_path, agent_toml="echo_delay_ms = 500", extra=extra) as s:
        running = asyncio.create_task(stream(s, _body("one", user="q")))
        await eventually(lambda: s.runtime.gateway.lanes.waiting(_key("q"))[1])
        waiting = asyncio.create_task(stream(s, _body("two", user="q")))
        await eventually(lambda: s.runtime.gateway.lanes.waiting(_key("q"))[0] == 1)
        dropped = await stream(s, _body("three", user="q"))
        assert dropped.status == 429 and dropped.headers["Retry-After"] == "1"
        for d in await asyncio.gather(running, waiting):
            d.assert_ended()
        await s.runtime.gateway.close()
        closed = await stream(s, _body("four", user="q"))
        assert closed.status == 503 and closed.headers["Retry-After"] == "1"
        assert json.loads(closed.events[0])["error"]["code"] == "shutting_down"


def _key(user: str) -> Any:
    return f"agent:main:http:{user}:api"


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (json.dumps(_body("x", user="*")).encode(), "invalid_user"),
        (json.dumps(_body("x", user="")).encode(), "invalid_user"),
        (json.dumps(_body("x", user="  ")).encode(), "invalid_user"),
        (b'{"model":"main","messages":[{"role":"user","content":"a\\ud800b"}]}', "invalid_unicode"),
        (
            b'{"model":"main","user":"a\\udfffb","messages":[{"role":"user","content":"x"}]}',
            "invalid_unicode",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid_json"),
    ],
    ids=[
        "wildcard-user",
        "empty-user",
        "blank-user",
        "lone-surrogate",
        "surrogate-user",
        "deep",
        "deep-inside",
    ],
)
async def test_bad_input_is_a_400_naming_the_problem_and_stores_nothing(
    tmp_path: Path, raw: bytes, code: str
) -> None:
    async with serve(tmp_path) as s, aiohttp.ClientSession() as http:
        async with http.post(
            s.url("/v1/chat/completions"), data=raw, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == code
        assert await s.entries() == []


async def test_unknown_routes_and_methods_get_openai_style_json_errors(tmp_path: Path) -> None:
    async with serve(tmp_path) as s, aiohttp.ClientSession() as http:
        async with http.get(s.url("/v1/nope")) as r:
            assert r.status == 404
            error = (await r.json())["error"]
            assert error["type"] == "not_found_error" and "/v1/nope" in error["message"]
        async with http.get(s.url("/v1/chat/completions")) as r:
            assert r.status == 405
            assert r.headers["Allow"] == "POST"
            assert "GET" in (await r.json())["error"]["message"]


async def test_a_named_user_called_anon_is_not_taken_for_a_one_off(tmp_path: Path) -> None:
    """Only requests with no session at all are deleted after the answer."""
    async with serve(tmp_path) as s, aiohttp.ClientSession() as http:
        async with http.post(
            s.url("/v1/chat/completions"), json=_body("x", user="anon-1", stream=False)
        ) as r:
            assert r.headers[SESSION_HEADER] == _key("anon-1")
        async with http.post(s.url("/v1/chat/completions"), json=_body("y", user=None, stream=False)) as r:
            assert r.status == 200
        # The one-off's entry is deleted after its answer.
        assert await eventually(lambda: _keys_are(s, [_key("anon-1")]))


async def _keys_are(s: Api, keys: list[str]) -> bool:
    return [e.key for e in await s.entries()] == keys
