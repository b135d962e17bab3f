"""`/stop` through the HTTP API: in the process that runs the answer, and across
processes: the turn runs in process A, the `/stop` reaches process B, and both share
one store (the files store's state directory, or one Redis). The store is the channel:
B advances the key's stop counter, A's running turn polls it and stops.

Across processes, both are real `chatlane run` processes, driven as a user's client would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from bots.testing import ChatlaneProcess, RedisServer, SlowStreamAgent, unique_prefix
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.store.files.store import FileStore
from tests.support.http import COMPLETIONS, body, serve

KEY = SessionKey("agent:main:http:ann:api")
SLOW = "[agent]\necho_delay_ms = 20000\n"  # echo: first piece, 20 s of "thinking", the rest


async def sse_pieces(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    async for raw in response.content:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        delta = json.loads(line.removeprefix("data: "))["choices"][0]["delta"]
        yield str(delta.get("content") or "")


async def stop_from_the_other_process(tmp_path: Path, store_toml: str) -> tuple[list[str], str]:
    """Ask A (streaming), `/stop` through B; A's pieces and B's answer."""
    config = tmp_path / "chatlane.toml"
    config.write_text(f'{SLOW}[store]\npath = "state"\n{store_toml}\n[http]\nport = 0\n', encoding="utf-8")
    a = await ChatlaneProcess.start(config, tmp_path / "a.log")
    b = await ChatlaneProcess.start(config, tmp_path / "b.log")
    pieces: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            asked = http.post(a.url + COMPLETIONS, json=body("hello", user="ann", stream=True))
            async with asked as response:
                assert response.status == 200
                stream = sse_pieces(response)
                pieces.append(await anext(stream))  # A is answering: its first piece is out
                async with http.post(b.url + COMPLETIONS, json=body("/stop", user="ann")) as stop:
                    assert stop.status == 200
                    told = (await stop.json())["choices"][0]["message"]["content"]
                async with asyncio.timeout(10):  # far below the 20 s of "thinking"
                    pieces += [p async for p in stream]
    finally:
        await a.terminate()
        await b.terminate()
    return pieces, told


def assert_stopped(pieces: list[str], told: str, transcript: list[ChatMessage]) -> None:
    assert pieces[0] == "echo: hello"
    assert "turn 1" not in "".join(pieces), "the rest of the answer never came"
    assert "".join(pieces).endswith("_(stopped)_"), "the cut-off answer says so"
    assert told.startswith("Asked to stop")
    assert [(m.role, m.content, m.interrupted) for m in transcript] == [("user", "hello", True)]


async def test_stop_taken_by_process_b_stops_the_turn_running_in_process_a_on_the_files_store(
    tmp_path: Path,
) -> None:
    pieces, told = await stop_from_the_other_process(tmp_path, "")
    store = FileStore(tmp_path / "state")
    try:
        entry = await store.get(KEY)
        assert entry is not None
        assert_stopped(pieces, told, await store.tail(entry.session_id, 10))
    finally:
        await store.close()


async def test_stop_taken_by_process_b_stops_the_turn_running_in_process_a_on_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import redis.asyncio as aioredis

    from core.store.redis.store import RedisStore

    prefix = unique_prefix()
    store_toml = f'backend = "redis"\nurl = "{redis_server.url}"\nprefix = "{prefix}"'
    pieces, told = await stop_from_the_other_process(tmp_path, store_toml)
    store = RedisStore(aioredis.Redis.from_url(redis_server.url), url=redis_server.url, prefix=prefix)
    try:
        entry = await store.get(KEY)
        assert entry is not None
        assert_stopped(pieces, told, await store.tail(entry.session_id, 10))
    finally:
        await store.close()


async def test_http_stop_in_the_same_process_answers_the_waiting_request_with_stopped(tmp_path: Path) -> None:
    """The non-streamed request whose answer was stopped gets a completion saying so."""
    agent = SlowStreamAgent(60, 0.05)
    async with serve(tmp_path, agent=agent) as api:
        asked = asyncio.create_task(api.post(body("hello", user="ann")))
        await agent.streaming.wait()
        status, stop, _ = await api.post(body("/stop", user="ann"))
        assert (status, stop["choices"][0]["message"]["content"]) == (200, "Stopped the answer in progress.")
        status, answer, _ = await asked
        assert (status, answer["choices"][0]["message"]["content"]) == (200, "Stopped.")
        assert [(m.content, m.interrupted) for m in await api.transcript(KEY)] == [("hello", True)]
