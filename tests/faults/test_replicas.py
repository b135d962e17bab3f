"""Answered once across replicas, and limits that hold across replicas: real `chatlane run`
processes sharing one store (a real redis-server, or one state folder), fed through the
real HTTP paths (signed Slack Events API posts, the Discord gateway of the fake, the
OpenAI-compatible API). Each test prints what it counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest

from bots.testing import ChatlaneProcess, RedisServer, unique_prefix
from bots.testing.fake_discord import FakeDiscord
from bots.testing.fake_slack import (
    BOT_USER,
    HUMAN,
    FakeSlack,
    event_callback,
    mention_twin,
    message_event,
    signed_headers,
)
from core.config import StoreSettings
from core.door.limits import SLOW_DOWN_TEXT
from core.store.redis.store import RedisStore
from tests.support.http import COMPLETIONS, body

pytestmark = pytest.mark.slow

SECRET = "replica-signing-secret"
ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET, "DISCORD_BOT_TOKEN": "fake-token"}
TRIALS = 20
SETTLE_S = 1.0
"""After the answers arrived, how long a second answer is given to show up."""
_EVENTS_URL = re.compile(rb"Events API on (http://127\.0\.0\.1:\d+/slack/events)")


def store_section(tmp_path: Path, server: RedisServer | None, prefix: str) -> str:
    if server is None:
        return f'[store]\npath = "{tmp_path / "state"}"\n'
    return f'[store]\nbackend = "redis"\nurl = "{server.url}"\nprefix = "{prefix}"\n'


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(slots=True)
class Replica:
    process: ChatlaneProcess
    events_url: str = ""


@contextlib.asynccontextmanager
async def replicas(configs: list[Path], tmp_path: Path) -> AsyncIterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for i, config in enumerate(configs):
            proc = await ChatlaneProcess.start(
                config, tmp_path / f"replica-{i}-{time.monotonic_ns()}.log", env=ENV
            )
            m = _EVENTS_URL.search(proc.log.read_bytes())
            started.append(Replica(proc, m.group(1).decode() if m else ""))
        yield started
    finally:
        for r in started:
            with contextlib.suppress(Exception):
                await r.process.terminate()


def slack_config(tmp_path: Path, fake: FakeSlack, store: str, extra: str = "") -> Path:
    return write(
        tmp_path,
        "slack",
        f'{store}[http]\nport = 0\n[slack]\nenabled = true\nmode = "http"\nport = 0\n'
        f'api_base_url = "{fake.api_base}"\n{extra}',
    )


async def post_event(http: aiohttp.ClientSession, url: str, raw: str, headers: dict[str, str]) -> int:
    async with http.post(url, data=raw, headers=headers) as resp:
        return resp.status


def signed(payload: dict[str, object]) -> tuple[str, dict[str, str]]:
    raw = json.dumps(payload)
    return raw, signed_headers(SECRET, raw)


def answers_to(fake: FakeSlack, word: str) -> int:
    """Answers the bot shows for `word`, however they were sent (posted or streamed)."""
    return sum(1 for text in fake.shown() if f"echo: {word}\n" in text)


async def wait_for_answers(fake: FakeSlack, words: list[str], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while any(answers_to(fake, w) == 0 for w in words):
            await asyncio.sleep(0.05)
    await asyncio.sleep(SETTLE_S)


async def duplicate_trials(
    fake: FakeSlack, http: aiohttp.ClientSession, a: Replica, b: Replica, tag: str
) -> tuple[list[str], list[tuple[str, dict[str, str], str]]]:
    """20 trials of the same signed event posted to both replicas at once, and 20 of an
    app_mention + message pair split across them. Returns the words and every signed post."""
    words: list[str] = []
    sent: list[tuple[str, dict[str, str], str]] = []
    for n in range(TRIALS):
        word = f"{tag}-same-{n}"
        raw, headers = signed(event_callback(message_event(f"<@{BOT_USER}> {word}", kind="app_mention")))
        statuses = await asyncio.gather(
            post_event(http, a.events_url, raw, headers), post_event(http, b.events_url, raw, headers)
        )
        assert list(statuses) == [200, 200]
        words.append(word)
        sent += [(raw, headers, a.events_url), (raw, headers, b.events_url)]
    for n in range(TRIALS):
        word = f"{tag}-pair-{n}"
        mention = message_event(f"<@{BOT_USER}> {word}", kind="app_mention")
        raw_m, h_m = signed(event_callback(mention))
        raw_t, h_t = signed(event_callback(mention_twin(mention)))
        first, second = (a, b) if n % 2 == 0 else (b, a)
        statuses = await asyncio.gather(
            post_event(http, first.events_url, raw_m, h_m), post_event(http, second.events_url, raw_t, h_t)
        )
        assert list(statuses) == [200, 200]
        words.append(word)
        sent += [(raw_m, h_m, first.events_url), (raw_t, h_t, second.events_url)]
    await wait_for_answers(fake, words)
    return words, sent


def count(fake: FakeSlack, words: list[str]) -> dict[str, int]:
    tally = {"answered once": 0, "answered twice or more": 0, "not answered": 0}
    for w in words:
        n = answers_to(fake, w)
        tally["answered once" if n == 1 else "not answered" if n == 0 else "answered twice or more"] += 1
    return tally


async def test_slack_copies_split_over_two_processes_on_one_redis_are_answered_once_also_a_minute_later(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    fake = await FakeSlack().start()
    store = store_section(tmp_path, redis_server, unique_prefix())
    try:
        async with aiohttp.ClientSession() as http:
            async with replicas([slack_config(tmp_path, fake, store)] * 2, tmp_path) as (a, b):
                words, sent = await duplicate_trials(fake, http, a, b, "redis")
                tally = count(fake, words)
                print(f"\nslack, 2 processes, one redis, {TRIALS} same-event + {TRIALS} pair trials: {tally}")
                assert tally == {"answered once": 2 * TRIALS, "answered twice or more": 0, "not answered": 0}
                posts_before = len(fake.shown())
                # A minute later (Slack accepts a signature for 5 minutes): every copy replayed
                # on the running replicas, and on a new replica that remembers nothing itself.
                await asyncio.sleep(61)
                for raw, headers, url in sent:
                    assert await post_event(http, url, raw, headers) == 200
            async with replicas([slack_config(tmp_path, fake, store)], tmp_path) as (fresh,):
                for raw, headers, _ in sent:
                    assert await post_event(http, fresh.events_url, raw, headers) == 200
                await asyncio.sleep(SETTLE_S * 2)
                replayed = len(fake.shown()) - posts_before
                print(
                    f"replayed {len(sent) * 2} copies 61 s later (running + new replica): {replayed} answers"
                )
                assert replayed == 0
                metrics = await (await http.get(fresh.process.url + "/metrics")).text()
                assert 'chatlane_deliveries_deduplicated_total{platform="slack",reason="retry"}' in metrics
    finally:
        await fake.close()


async def test_slack_copies_split_over_two_processes_on_one_state_folder_are_answered_once(
    tmp_path: Path,
) -> None:
    fake = await FakeSlack().start()
    try:
        async with aiohttp.ClientSession() as http:
            config = slack_config(tmp_path, fake, store_section(tmp_path, None, ""))
            async with replicas([config] * 2, tmp_path) as (a, b):
                words, _ = await duplicate_trials(fake, http, a, b, "files")
        tally = count(fake, words)
        print(f"\nslack, 2 processes, one state folder, {TRIALS} + {TRIALS} trials: {tally}")
        assert tally == {"answered once": 2 * TRIALS, "answered twice or more": 0, "not answered": 0}
    finally:
        await fake.close()


async def test_a_discord_message_replayed_to_two_processes_is_answered_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    fake = await FakeDiscord().start()
    config = write(
        tmp_path,
        "discord",
        store_section(tmp_path, redis_server, unique_prefix())
        + f'[http]\nport = 0\n[discord]\nenabled = true\napi_base_url = "{fake.api_base}"\n'
        f'gateway_url = "{fake.gateway_url}"\nguild_ready_timeout_s = 0.05\nsync_commands = false\n',
    )
    try:
        async with replicas([config] * 2, tmp_path):
            async with asyncio.timeout(10):
                while fake.connections < 2:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # both past READY and GUILD_CREATE
            for n in range(TRIALS):
                message = fake.message_payload(
                    f"<@{fake.bot_id}> hello {n}",
                    author=fake.person(fake.alice_id),
                    channel_id=fake.channel_id,
                    in_guild=True,
                    mentions=[fake.bot_user()],
                )
                await fake.broadcast("MESSAGE_CREATE", message)
            await fake.wait_for_sent(fake.channel_id, TRIALS, timeout=30)
            await asyncio.sleep(SETTLE_S)
            sent = [m.get("content", "") for m in fake.sent_to(fake.channel_id)]
            per = [sum(1 for s in sent if s.startswith(f"echo: hello {n}\n")) for n in range(TRIALS)]
            print(
                f"\ndiscord, 2 processes, {TRIALS} messages each delivered to both: answers per message {per}"
            )
            assert per == [1] * TRIALS
    finally:
        await fake.close()


async def said_by_users(server: RedisServer, prefix: str) -> list[str]:
    """Every user message stored under `prefix`, read back through a store of its own."""
    store = RedisStore.from_settings(StoreSettings(backend="redis", url=server.url, prefix=prefix), None)
    try:
        said: list[str] = []
        for entry in (await store.list()).entries:
            said += [m.content for m in await store.tail(entry.session_id, 1000) if m.role == "user"]
        return said
    finally:
        await store.close()


async def test_ten_concurrent_retries_with_one_idempotency_key_run_one_turn_and_get_equal_answers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    config = write(
        tmp_path,
        "http",
        store_section(tmp_path, redis_server, prefix) + "[http]\nport = 0\n[agent]\necho_delay_ms = 500\n",
    )
    async with replicas([config] * 2, tmp_path) as (a, b), aiohttp.ClientSession() as http:
        request = body("what is two and two?", user="carol")
        headers = {"Idempotency-Key": "order-42"}

        async def attempt(r: Replica) -> tuple[int, bytes]:
            async with http.post(r.process.url + COMPLETIONS, json=request, headers=headers) as resp:
                return resp.status, await resp.read()

        results = await asyncio.gather(*(attempt((a, b)[i % 2]) for i in range(10)))
        assert {status for status, _ in results} == {200}
        assert len({raw for _, raw in results}) == 1  # ten equal answers, byte for byte
        users = await said_by_users(redis_server, prefix)
        print(f"\n10 concurrent retries over 2 processes: {len(users)} turn(s), 1 distinct answer")
        assert users == ["what is two and two?"]
        other = body("something else", user="carol")
        async with http.post(a.process.url + COMPLETIONS, json=other, headers=headers) as resp:
            assert resp.status == 422
            assert (await resp.json())["error"]["code"] == "idempotency_key_reused"

        # The openai client times out at 0.2 s and retries with the same key: one turn.
        client = openai.AsyncOpenAI(base_url=b.process.url + "/v1", api_key="k", timeout=0.2, max_retries=5)
        try:
            completion = await client.chat.completions.create(
                model="main",
                messages=[{"role": "user", "content": "count me once"}],
                user="dave",
                extra_headers={"Idempotency-Key": "dave-1"},
            )
        finally:
            await client.close()
        assert (completion.choices[0].message.content or "").startswith("echo: count me once\n")
        said = await said_by_users(redis_server, prefix)
        assert said.count("count me once") == 1


async def test_one_user_limited_to_5_a_minute_over_two_processes_gets_5_answers_and_one_slow_down(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    fake = await FakeSlack().start()
    store = store_section(tmp_path, redis_server, unique_prefix())
    try:
        config = slack_config(tmp_path, fake, store.replace("[store]", "[limits]\nper_minute = 5\n[store]"))
        async with replicas([config] * 2, tmp_path) as (a, b), aiohttp.ClientSession() as http:
            for n in range(12):
                raw, headers = signed(
                    event_callback(
                        message_event(f"<@{BOT_USER}> limited-{n}", kind="app_mention", user=HUMAN)
                    )
                )
                assert await post_event(http, (a, b)[n % 2].events_url, raw, headers) == 200
            async with asyncio.timeout(30):
                while len(fake.shown()) < 6:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(SETTLE_S)
            texts = fake.shown()
            answered = [t for t in texts if t.startswith("echo: limited-")]
            slow = [t for t in texts if t == SLOW_DOWN_TEXT]
            print(
                "\n12 messages of one user over 2 processes, limit 5/minute:",
                f"{len(answered)} answered, {len(slow)} slow-down",
            )
            assert (len(answered), len(slow), len(texts)) == (5, 1, 6)
            metrics = "".join([await (await http.get(r.process.url + "/metrics")).text() for r in (a, b)])
            limited = sum(
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith('chatlane_rate_limited_total{platform="slack"}')
            )
            assert limited == 7
    finally:
        await fake.close()
