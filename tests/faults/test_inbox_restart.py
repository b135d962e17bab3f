"""The durable inbox from outside: real `chatlane run` processes, killed and restarted,
with HTTP clients that retry with their `Idempotency-Key` (as the openai client does).

A request with an `Idempotency-Key` is kept in the durable inbox before the turn
starts; when its process dies (kill -9) or drains (SIGTERM), the process that resumes
it stores the answer under the key's claim, and the client's retry, on a restarted
process or another replica, gets it. The transcript holds each message once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bots.testing import ChatlaneProcess, RedisServer, eventually, run_cli, unique_prefix, write_config
from core.store import jsonl
from tests.support.http import COMPLETIONS, body

USER = "alice"
KEY = f"agent:main:http:{USER}:api"


async def post(
    http: aiohttp.ClientSession, url: str, text: str, key: str, *, timeout: float = 30
) -> tuple[int, dict[str, Any]]:
    """One request with an Idempotency-Key: (status, body); (0, {}) when the connection died."""
    try:
        async with http.post(
            url + COMPLETIONS,
            json=body(text, USER),
            headers={"Idempotency-Key": key},
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return resp.status, await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError):
        return 0, {}


async def answer(http: aiohttp.ClientSession, url: str, text: str, key: str, deadline_s: float = 30) -> str:
    """Retry like a client until the request with `key` is answered (409: still running)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        status, got = await post(http, url, text, key)
        if status == 200:
            return str(got["choices"][0]["message"]["content"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} ({key}) not answered within {deadline_s}s")


def user_records(state: Path) -> list[str]:
    """Every user message in every transcript under `state`."""
    out: list[str] = []
    for path in sorted((state / "transcripts").glob("*/*.jsonl")):
        out += [r.content for r in jsonl.read_all(path)[0] if r.role == "user"]
    return out


def _adds_are(state: Path, n: int) -> bool:
    return inbox_lines(state).count('"add"') == n


def inbox_lines(state: Path) -> str:
    return "".join(p.read_text() for p in (state / "inbox").glob("[0-9a-f][0-9a-f]/*.jsonl"))


async def test_kill_9_mid_turn_then_the_retry_on_the_restarted_process_gets_the_answer_once(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "idempotency_wait_s = 1\n[agent]\necho_delay_ms = 1500\n")
    state = tmp_path / "state"
    log = tmp_path / "run.log"
    async with aiohttp.ClientSession() as http:
        first = await ChatlaneProcess.start(config, log)
        try:
            request = asyncio.ensure_future(post(http, first.url, "remember the milk", "k-1"))
            await eventually(lambda: '"try"' in inbox_lines(state), timeout=15)  # the turn started
            await first.kill()
            assert (await request)[0] == 0  # the connection died with the process
        finally:
            await first.stop()
        listed = await asyncio.to_thread(run_cli, "sessions", "list", "--json", "--config", str(config))
        assert [row["pending"] for row in json.loads(listed.stdout)] == [1]
        shown = await asyncio.to_thread(run_cli, "sessions", "show", KEY, "--json", "--config", str(config))
        assert [i["text"] for i in json.loads(shown.stdout)["pending"]] == ["remember the milk"]
        async with await ChatlaneProcess.start(config, log) as second:
            text = await answer(http, second.url, "remember the milk", "k-1")
            assert text.startswith("echo: remember the milk")
            again = await answer(http, second.url, "remember the milk", "k-1")
            assert again == text  # stored once, replayed
            assert "inbox: resumed item" in second.stderr()
    assert user_records(state) == ["remember the milk"]


async def test_sigterm_with_followups_queued_then_restart_answers_all_once_in_order(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, "idempotency_wait_s = 1\n[agent]\necho_delay_ms = 2000\n[queue]\ndrain_s = 0.2\n"
    )
    state = tmp_path / "state"
    log = tmp_path / "run.log"
    texts = ["r1", "r2", "r3"]
    async with aiohttp.ClientSession() as http:
        first = await ChatlaneProcess.start(config, log)
        try:
            requests = []
            for i, text in enumerate(texts):
                requests.append(asyncio.ensure_future(post(http, first.url, text, f"k-{i}")))
                await eventually(functools.partial(_adds_are, state, i + 1), timeout=15)
            await eventually(lambda: '"try"' in inbox_lines(state), timeout=15)
            assert await first.terminate(timeout=15) == 0
            statuses = [(await r)[0] for r in requests]
            # r1 may have finished within the drain on a slow machine; nobody heard "send again"
            assert statuses[0] in (0, 200, 503) and all(s in (0, 503) for s in statuses[1:]), statuses
        finally:
            await first.stop()
        assert "Please send it again" not in first.stderr()
        async with await ChatlaneProcess.start(config, log) as second:
            got = [await answer(http, second.url, t, f"k-{i}") for i, t in enumerate(texts)]
    assert [g.split("\n")[0] for g in got] == [f"echo: {t}" for t in texts]
    turns = [int(g.split("(turn ")[1].split(" ")[0]) for g in got]
    assert turns == [1, 2, 3]
    assert user_records(state) == texts


async def test_two_replicas_on_redis_the_survivor_finishes_a_killed_replicas_conversation(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    lease_s = 2.0
    prefix = unique_prefix()
    config = tmp_path / "chatlane.toml"
    config.write_text(
        f'[store]\nbackend = "redis"\nurl = "{redis_server.url}"\nprefix = "{prefix}"\n'
        f"turn_lock_ttl_s = {lease_s}\n[http]\nport = 0\nidempotency_wait_s = 0.5\n"
        "[agent]\necho_delay_ms = 100\n[queue]\nadopt_every_s = 0.3\n"
    )
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    texts = ["r1", "r2", "r3"]
    client = aioredis.Redis.from_url(redis_server.url)
    async with aiohttp.ClientSession() as http:
        doomed = await ChatlaneProcess.start(config, tmp_path / "a.log")
        survivor = await ChatlaneProcess.start(config, tmp_path / "b.log")
        try:
            requests = []
            for i, text in enumerate(texts):
                requests.append(asyncio.ensure_future(post(http, doomed.url, text, f"k-{i}")))
                await eventually(functools.partial(_zcard, client, f"{prefix}:inbox-order:{digest}", i + 1))
            await eventually(lambda: _has_try(client, f"{prefix}:inbox:{digest}"))  # r1's turn runs
            await doomed.kill()
            killed = time.monotonic()
            assert [(await r)[0] for r in requests] == [0, 0, 0]
            got = await asyncio.gather(
                *(answer(http, survivor.url, t, f"k-{i}") for i, t in enumerate(texts))
            )
            took = time.monotonic() - killed
            assert "inbox: resumed item" in survivor.stderr()
        finally:
            await doomed.stop()
            await survivor.stop()
            await client.aclose()
    assert [g.split("\n")[0] for g in got] == [f"echo: {t}" for t in texts]
    assert [int(g.split("(turn ")[1].split(" ")[0]) for g in got] == [1, 2, 3]
    assert took <= lease_s + 2, took


async def _zcard(client: aioredis.Redis, name: str, n: int) -> bool:
    return int(await client.zcard(name)) == n


async def _has_try(client: aioredis.Redis, name: str) -> bool:
    return any(f.startswith(b"t:") for f in await client.hkeys(name))  # type: ignore[misc]
