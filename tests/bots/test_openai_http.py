"""The OpenAI-compatible HTTP API, driven by the official `openai` client and raw HTTP."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from bots.http.service import SESSION_HEADER, HttpService
from bots.launcher import load_config
from bots.runtime import Runtime, StartupError
from bots.testing import eventually
from bots.testing.fake_llm import FakeLLM
from core.agents.base import TurnInput
from core.model.errors import AgentError
from tests.support.http import serve

TOKEN = "s3cret-token"


def _openai_agent(llm: FakeLLM, system_prompt: str = "be brief") -> str:
    return (
        f'backend = "openai"\nsystem_prompt = "{system_prompt}"\n'
        f'[agent.openai]\nbase_url = "{llm.base_url}"\nmodel = "m"\nmax_retries = 0\ntimeout = 10\n'
    )


def _user_turns(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


# ---------------------------------------------------------------- the openai client as a user


async def test_openai_client_json_completion_keeps_memory_per_user(tmp_path: Path) -> None:
    """Non-streaming: the `user` field names the session; a second call sees the first."""
    async with serve(tmp_path) as s, s.client() as client:
        first = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "hello"}], user="alice"
        )
        second = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "again"}], user="alice"
        )
        assert first.object == "chat.completion"
        assert first.choices[0].message.role == "assistant"
        assert first.choices[0].finish_reason == "stop"
        assert (first.choices[0].message.content or "").startswith("echo: hello")
        content = second.choices[0].message.content or ""
        assert "turn 2" in content
        assert "'hello'" in content
        assert [e.key for e in await s.entries()] == ["agent:main:http:alice:api"]


async def test_openai_client_streaming_completion(tmp_path: Path) -> None:
    """stream=True: SSE chunks the client parses, joining to the full answer, then [DONE]."""
    async with serve(tmp_path) as s, s.client() as client:
        stream = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "hi there"}], user="bob", stream=True
        )
        pieces = []
        finish = []
        async for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            finish.append(chunk.choices[0].finish_reason)
        text = "".join(pieces)
        assert len(pieces) >= 2  # the echo agent streams two pieces
        assert text.startswith("echo: hi there")
        assert "turn 1" in text
        assert finish[-1] == "stop"
        records = await s.transcript("agent:main:http:bob:api")
        assert [r.content for r in records] == ["hi there", text]


async def test_openai_client_session_key_header_via_extra_headers(tmp_path: Path) -> None:
    """X-Session-Key joins that exact conversation (thread part included), ignoring `user`."""
    key = "agent:main:http:team-a:support:ticket-42"
    async with serve(tmp_path) as s, s.client() as client:
        for text in ("one", "two"):
            reply = await client.chat.completions.with_raw_response.create(
                model="main",
                messages=[{"role": "user", "content": text}],
                user="ignored",
                extra_headers={SESSION_HEADER: key},
            )
            assert reply.headers[SESSION_HEADER] == key
        content = reply.parse().choices[0].message.content or ""
        assert "turn 2" in content
        assert [e.key for e in await s.entries()] == [key]


async def test_without_key_or_user_each_request_is_its_own_session_deleted_after(tmp_path: Path) -> None:
    """Stateless requests get fresh sessions (the response header names each one), and
    leave nothing behind in the store once answered."""
    async with serve(tmp_path) as s, s.client() as client:
        keys = []
        for _ in range(2):
            raw = await client.chat.completions.with_raw_response.create(
                model="main", messages=[{"role": "user", "content": "x"}]
            )
            assert "turn 1" in (raw.parse().choices[0].message.content or "")
            keys.append(raw.headers[SESSION_HEADER])
        assert keys[0] != keys[1]

        async def store_is_empty() -> bool:
            return not await s.entries()

        # One-off sessions leave the store once answered: no entry, no transcript.
        await eventually(store_is_empty)
        assert not list((tmp_path / "state" / "transcripts").glob("*/*.jsonl"))


async def test_only_the_last_user_message_is_new_input(tmp_path: Path) -> None:
    """Client-side history is ignored: the server's memory is the history."""
    async with serve(tmp_path) as s, s.client() as client:
        await client.chat.completions.create(
            model="main",
            messages=[
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "old"},
                {"role": "assistant", "content": "old answer"},
                {"role": "user", "content": [{"type": "text", "text": "newest"}]},
            ],
            user="carol",
        )
        records = await s.transcript("agent:main:http:carol:api")
        assert [r.content for r in records if r.role == "user"] == ["newest"]


async def test_reset_command_over_http_starts_a_new_session(tmp_path: Path) -> None:
    async with serve(tmp_path) as s, s.client() as client:
        await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "a"}], user="d"
        )
        before = (await s.entries())[0].session_id
        notice = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "/new"}], user="d"
        )
        assert notice.choices[0].message.content == "Started a new conversation."
        after = await client.chat.completions.create(
            model="main", messages=[{"role": "user", "content": "b"}], user="d"
        )
        assert "turn 1" in (after.choices[0].message.content or "")
        assert (await s.entries())[0].session_id != before


# ---------------------------------------------------------------- memory under concurrency


async def test_same_key_burst_is_one_session_of_ordered_turns_each_seeing_the_earlier(tmp_path: Path) -> None:
    """10 concurrent requests, one key, slow model: every later call was shown every earlier turn."""
    async with FakeLLM(delay_s=0.05) as llm, serve(tmp_path, agent_toml=_openai_agent(llm)) as s:
        async with s.client() as client:

            async def ask(i: int) -> str:
                r = await client.chat.completions.create(
                    model="main", messages=[{"role": "user", "content": f"msg {i}"}], user="burst"
                )
                return r.choices[0].message.content or ""

            answers = await asyncio.wait_for(asyncio.gather(*(ask(i) for i in range(10))), 30)
        assert answers == [f"reply to: msg {i}" for i in range(10)]
        assert len(await s.entries()) == 1
        assert len(llm.calls) == 10
        order = [_user_turns(c.messages)[-1] for c in llm.calls]
        assert sorted(order) == sorted(f"msg {i}" for i in range(10))
        for k, call in enumerate(llm.calls):
            expected: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}]
            for said in order[:k]:
                expected += [
                    {"role": "user", "content": said},
                    {"role": "assistant", "content": f"reply to: {said}"},
                ]
            expected.append({"role": "user", "content": order[k]})
            assert call.messages == expected, f"call {k} was shown the wrong history"
        records = await s.transcript("agent:main:http:burst:api")
        assert [r.content for r in records if r.role == "user"] == order


async def test_second_request_mid_turn_lands_in_the_same_session_and_sees_the_first(tmp_path: Path) -> None:
    """The follow-up sent 100 ms into the first turn waits for it and is shown it."""
    async with FakeLLM(delay_s=0.4) as llm, serve(tmp_path, agent_toml=_openai_agent(llm)) as s:
        key = "agent:main:http:dave:api"
        async with s.client() as client:

            async def ask(text: str) -> str:
                r = await client.chat.completions.create(
                    model="main",
                    messages=[{"role": "user", "content": text}],
                    extra_headers={SESSION_HEADER: key},
                )
                return r.choices[0].message.content or ""

            first = asyncio.create_task(ask("first"))
            await asyncio.sleep(0.1)
            await eventually(lambda: len(llm.calls) == 1)  # really mid-turn, even on a slow machine
            second = await asyncio.wait_for(ask("second"), 10)
            assert await asyncio.wait_for(first, 10) == "reply to: first"
        assert second == "reply to: second"
        assert len(await s.entries()) == 1
        assert llm.calls[1].messages[1:] == [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply to: first"},
            {"role": "user", "content": "second"},
        ]


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_mid_turn_still_stores_the_turn(tmp_path: Path, stream: bool) -> None:
    """The lanes own the turn: a vanished client does not cancel it; the next request sees it."""
    async with serve(tmp_path, agent_toml="echo_delay_ms = 500") as s, aiohttp.ClientSession() as http:
        body = {
            "model": "main",
            "messages": [{"role": "user", "content": "gone"}],
            "user": "eve",
            "stream": stream,
        }

        async def call() -> None:
            async with http.post(s.url("/v1/chat/completions"), json=body) as resp:
                await resp.read()

        caller = asyncio.create_task(call())
        await eventually(lambda: len(s.runtime.gateway.lanes) == 1)  # the turn is queued or running
        caller.cancel()  # closes the connection mid-turn
        await asyncio.wait({caller}, timeout=5)
        assert caller.cancelled()
        assert await s.entries() == [] or (await s.entries())[0].turns == 0  # not yet answered

        async def stored() -> bool:
            entries = await s.entries()
            return bool(entries) and entries[0].turns == 1

        await eventually(stored)
        records = await s.transcript("agent:main:http:eve:api")
        assert [r.role for r in records] == ["user", "assistant"]
        assert records[1].content.startswith("echo: gone")
        async with s.client() as client:
            nxt = await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "back"}], user="eve"
            )
        assert "turn 2" in (nxt.choices[0].message.content or "")


# ---------------------------------------------------------------- refusals


def _chat(content: str = "hi", **more: Any) -> dict[str, Any]:
    return {"model": "main", "messages": [{"role": "user", "content": content}], **more}


BAD_REQUESTS: list[tuple[str, dict[str, str], bytes | None, int, str]] = [
    ("no token", {}, json.dumps(_chat()).encode(), 401, "token"),
    ("wrong token", {"Authorization": "Bearer nope"}, json.dumps(_chat()).encode(), 401, "token"),
    ("oversize body", {}, json.dumps(_chat("x" * (1 << 20))).encode(), 413, "1048576"),
    ("invalid json", {}, b'{"model": "main", "messages": [', 400, "JSON"),
    ("not an object", {}, b"[1, 2]", 400, "object"),
    ("messages not a list", {}, json.dumps({"messages": "hi"}).encode(), 400, "messages"),
    (
        "no user message",
        {},
        json.dumps({"messages": [{"role": "system", "content": "s"}]}).encode(),
        400,
        "role 'user'",
    ),
    ("stream not a bool", {}, json.dumps(_chat(stream="yes")).encode(), 400, "stream"),
    (
        "content not text",
        {},
        json.dumps(_chat() | {"messages": [{"role": "user", "content": 5}]}).encode(),
        400,
        "content",
    ),
    ("user with a space", {}, json.dumps(_chat(user="a b")).encode(), 400, "invalid user"),
    ("user not a string", {}, json.dumps(_chat(user=7)).encode(), 400, "user"),
    ("malformed key", {SESSION_HEADER: "agent:main:http"}, json.dumps(_chat()).encode(), 400, "5 or 6"),
    (
        "bad key part",
        {SESSION_HEADER: "agent:main:http:a/b:api"},
        json.dumps(_chat()).encode(),
        400,
        "invalid user",
    ),
    (
        "foreign agent",
        {SESSION_HEADER: "agent:other:http:u:api"},
        json.dumps(_chat()).encode(),
        400,
        "'other'",
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [pytest.param(h, b, st, r, id=name) for name, h, b, st, r in BAD_REQUESTS],
)
async def test_bad_requests_are_refused_with_a_reason_and_create_no_session(
    tmp_path: Path, headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    sent = {**auth, **headers} if "Authorization" not in headers and status != 401 else headers
    async with (
        serve(tmp_path, env={"CHATLANE_HTTP_TOKEN": TOKEN}) as s,
        aiohttp.ClientSession() as http,
        http.post(
            s.url("/v1/chat/completions"),
            data=io.BytesIO(body),
            headers={**sent, "Content-Type": "application/json"},
        ) as resp,
    ):
        assert resp.status == status
        error = (await resp.json())["error"]
        assert reason in error["message"]
        assert error["type"]
        assert await s.entries() == []
        assert s.runtime.gateway.lanes.depth == 0


async def test_oversize_chunked_body_without_length_is_413(tmp_path: Path) -> None:
    """No Content-Length to check up front: the read itself stops at the limit."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 65536

    async with (
        serve(tmp_path) as s,
        aiohttp.ClientSession() as http,
        http.post(s.url("/v1/chat/completions"), data=chunks()) as resp,
    ):
        assert resp.status == 413
        assert "http.max_body_bytes" in (await resp.json())["error"]["message"]
        assert await s.entries() == []


async def test_undecodable_header_bytes_are_a_401_not_a_crash(tmp_path: Path) -> None:
    body = b'{"messages": [{"role": "user", "content": "x"}]}'
    async with serve(tmp_path, env={"CHATLANE_HTTP_TOKEN": TOKEN}) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.service.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff\xfe\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        assert response.startswith(b"HTTP/1.1 401")
        assert b"bearer token" in response
        assert await s.entries() == []


async def test_the_openai_client_sees_a_bad_token_as_authentication_error(tmp_path: Path) -> None:
    async with serve(tmp_path, env={"CHATLANE_HTTP_TOKEN": TOKEN}) as s:
        async with s.client(api_key="wrong") as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(
                    model="main", messages=[{"role": "user", "content": "x"}]
                )
        async with s.client(api_key=TOKEN) as client:
            ok = await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "x"}]
            )
        assert (ok.choices[0].message.content or "").startswith("echo: x")


async def test_refuses_to_start_on_a_public_host_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[http]\nhost = "0.0.0.0"\nport = 0\n[store]\npath = "{tmp_path / "st"}"\n', encoding="utf-8"
    )
    runtime = Runtime.build(load_config(path, env={}))
    service = HttpService(runtime)
    try:
        with pytest.raises(StartupError, match="CHATLANE_HTTP_TOKEN"):
            await service.start()
        assert service.port == 0
    finally:
        await service.stop()
        await runtime.close()


async def test_shutdown_answers_503(tmp_path: Path) -> None:
    async with serve(tmp_path) as s, s.client() as client:
        await s.runtime.gateway.close()
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "x"}], user="f"
            )
        assert caught.value.status_code == 503
        assert await s.entries() == []


async def test_requests_waiting_on_a_slow_model_are_answered_503_at_once_when_the_service_stops(
    tmp_path: Path,
) -> None:
    """Requests wait for their reply without a task each; stopping the service still
    answers every one of them 503 (retry elsewhere) instead of holding them until the
    model is done (30 s here) or aiohttp's shutdown timeout."""
    async with serve(tmp_path, agent_toml="echo_delay_ms = 30000", extra="[queue]\ndrain_s = 0\n") as s:
        body = {"model": "main", "messages": [{"role": "user", "content": "slow"}]}
        waiting = [asyncio.create_task(s.post({**body, "user": f"w{i}"})) for i in range(3)]
        lanes = s.runtime.gateway.lanes
        await eventually(lambda: len(lanes) == 3 and lanes.depth == 0)  # three turns running
        async with asyncio.timeout(10):
            await s.service.stop()
            answers = await asyncio.gather(*waiting)
        assert [status for status, _, _ in answers] == [503, 503, 503]
        assert all(headers["Retry-After"] for _, _, headers in answers)


# ---------------------------------------------------------------- agent failure


async def test_agent_failure_is_a_502_that_forbids_retry_and_keeps_the_message(tmp_path: Path) -> None:
    """Choice: a 502 error (not a 200 with failure text); the message stays in memory."""
    async with FakeLLM(fail_first=1) as llm, serve(tmp_path, agent_toml=_openai_agent(llm)) as s:
        async with s.client(max_retries=2) as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model="main", messages=[{"role": "user", "content": "lost?"}], user="g"
                )
            assert caught.value.status_code == 502
            assert caught.value.response.headers["x-should-retry"] == "false"
            assert "couldn't answer" in caught.value.message
            assert len(llm.calls) == 1  # the client obeyed: no retry, no duplicate message
            ok = await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "still there?"}], user="g"
            )
        assert ok.choices[0].message.content == "reply to: still there?"
        assert _user_turns(llm.calls[1].messages) == ["lost?", "still there?"]


async def test_agent_failure_before_streaming_is_a_plain_502(tmp_path: Path) -> None:
    """Streaming: a failure before the first piece is a plain 502, never a broken stream."""
    async with (
        FakeLLM(fail_first=1) as llm,
        serve(tmp_path, agent_toml=_openai_agent(llm)) as s,
        s.client() as client,
    ):

        async def consume() -> None:
            stream = await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "x"}], user="h", stream=True
            )
            async for _ in stream:
                pass

        with pytest.raises(openai.APIStatusError) as caught:
            await consume()
        assert caught.value.status_code == 502


class _FailsMidStream:
    """An agent that streams a piece and then fails (the agent boundary, not code under test)."""

    name = "fails-mid-stream"

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        yield "partial "
        raise AgentError("upstream broke mid-answer")

    async def close(self) -> None:
        return None


async def test_agent_failure_after_the_first_piece_ends_the_stream_with_an_error_event(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path, agent=_FailsMidStream()) as s, s.client() as client:
        seen: list[str] = []

        async def consume() -> None:
            stream = await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "x"}], user="j", stream=True
            )
            async for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")

        with pytest.raises(openai.APIError, match="couldn't answer"):
            await consume()
        assert "".join(seen) == "partial "
        assert [r.role for r in await s.transcript("agent:main:http:j:api")] == ["user"]


async def test_a_message_dropped_from_a_full_queue_is_a_429(tmp_path: Path) -> None:
    extra = '[queue]\ncap = 1\ndrop = "newest"'
    async with serve(tmp_path, agent_toml="echo_delay_ms = 300", extra=extra) as s, s.client() as client:

        async def ask(text: str) -> int:
            try:
                await client.chat.completions.create(
                    model="main", messages=[{"role": "user", "content": text}], user="k"
                )
            except openai.RateLimitError:
                return 429
            return 200

        running = asyncio.create_task(ask("one"))
        await eventually(lambda: s.runtime.gateway.lanes.depth == 0 and len(s.runtime.gateway.lanes) == 1)
        waiting = asyncio.create_task(ask("two"))
        await eventually(lambda: s.runtime.gateway.lanes.depth == 1)
        assert await asyncio.wait_for(ask("three"), 5) == 429
        assert list(await asyncio.wait_for(asyncio.gather(running, waiting), 10)) == [200, 200]
        records = await s.transcript("agent:main:http:k:api")
        assert [r.content for r in records if r.role == "user"] == ["one", "two"]


# ---------------------------------------------------------------- other endpoints


async def test_models_healthz_and_metrics(tmp_path: Path) -> None:
    async with serve(tmp_path, env={"CHATLANE_HTTP_TOKEN": TOKEN}) as s:
        async with s.client(api_key=TOKEN) as client:
            models = await client.models.list()
            assert [m.id for m in models.data] == ["main"]
            assert (await client.models.retrieve("main")).id == "main"
            await client.chat.completions.create(
                model="main", messages=[{"role": "user", "content": "m"}], user="i"
            )
        async with aiohttp.ClientSession() as http:
            async with http.get(s.url("/healthz")) as resp:  # no token needed
                assert resp.status == 200
                assert (await resp.json())["status"] == "ok"
            async with http.get(s.url("/metrics")) as resp:
                assert resp.status == 401

            async def scrape() -> str:
                async with http.get(s.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    return await resp.text()

            # The turn's latency is recorded just after its reply is delivered: wait for it.
            await eventually(lambda: scrape_has(scrape, "chatlane_turn_latency_seconds_count 1.0"))
            text = await scrape()
        assert 'chatlane_messages_in_total{platform="http"} 1.0' in text
        assert "chatlane_sessions_minted_total 1.0" in text
        assert 'chatlane_turns_total{outcome="answered"} 1.0' in text


async def scrape_has(scrape: Callable[[], Awaitable[str]], line: str) -> bool:
    return line in await scrape()


async def test_describe_reports_the_bound_address(tmp_path: Path) -> None:
    async with serve(tmp_path) as s:
        assert s.service.port > 0
        assert f"http://127.0.0.1:{s.service.port}/v1" in s.service.describe()
