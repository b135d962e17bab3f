"""The fenced turn commit, attacked from outside (issue 13).

A turn stores itself with ONE commit that a newer holder of the key's turn lock fences
out. Each test counts what matters and prints it: turns stored with one number twice,
messages answered twice or never, and "didn't answer" replies whose answer is stored.

Real processes (`chatlane run`), a real redis-server, a TCP proxy of the test's own
between one process and Redis, and a real tmpfs that fills up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.testing.process import ChatlaneProcess, write_config
from bots.testing.redis import RedisServer, unique_prefix
from core.config import StoreSettings
from core.conversation.reserver import Reserver
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import TurnCommit
from core.store.redis.store import RedisStore
from core.turn.runner import STORE_FAILURE_TEXT
from tests.faults.harness import fill_disk, mounted_or_skipped
from tests.faults.tcp_proxy import proxy_to
from tests.support.http import COMPLETIONS, body

pytestmark = pytest.mark.slow

TTL_S = 1.0


# ------------------------------------------------------------------ counting
@dataclass(slots=True)
class Tally:
    """What a run of trials did, counted from the replies and from the stored commits."""

    trials: int = 0
    overlapping: int = 0
    """Stored commits with a turn number already stored, or out of order."""
    answered_twice: int = 0
    unanswered: int = 0
    false_failures: int = 0
    """"didn't answer" replies whose message is stored."""
    notes: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.trials} trials, {self.overlapping} overlapping turns, "
            f"{self.answered_twice} answered twice, {self.unanswered} unanswered, "
            f"{self.false_failures} false 'not answered'"
        )

    def clean(self) -> bool:
        return self.overlapping == self.answered_twice == self.unanswered == self.false_failures == 0


def count_commits(commits: list[dict[str, Any]], replies: dict[str, tuple[int, str]], tally: Tally) -> None:
    """Check one conversation: `commits` as stored (oldest first), `replies` message -> (status, text)."""
    turns = [c["turns"] for c in commits]
    counted = [t for i, t in enumerate(turns) if i == 0 or t != turns[i - 1]]
    if counted != list(range(1, len(counted) + 1)) or len(set(counted)) != len(counted):
        tally.overlapping += 1
        tally.notes.append(f"turn numbers {turns}")
    said: dict[str, int] = {}
    for c in commits:
        users = [r["content"] for r in c["records"] if r["role"] == "user"]
        answered = any(r["role"] == "assistant" for r in c["records"])
        for text in users:
            said[text] = said.get(text, 0) + (1 if answered else 0)
    for text, (status, reply) in replies.items():
        stored = said.get(text, 0)
        if stored > 1:
            tally.answered_twice += 1
        if status == 200 and stored == 0:
            tally.unanswered += 1
            tally.notes.append(f"{text!r} acknowledged but not stored")
        if status != 200 and text in said:
            tally.false_failures += 1
            tally.notes.append(f"{text!r}: {status} {reply[:60]!r} but stored")


def redis_commits(server: RedisServer, prefix: str, key: str) -> list[dict[str, Any]]:
    with server.client() as r:
        raw = r.get(f"{prefix}:entry:{hashlib.sha256(key.encode()).hexdigest()}")
        if raw is None:
            return []
        sid = json.loads(raw)["sessionId"]
        return [json.loads(x) for x in r.lrange(f"{prefix}:transcript:{sid}", 0, -1)]


async def ask(http: aiohttp.ClientSession, proc: ChatlaneProcess, text: str, user: str) -> tuple[int, str]:
    async with http.post(proc.url + COMPLETIONS, json=body(text, user=user)) as resp:
        data = await resp.json()
        if resp.status == 200:
            return 200, str(data["choices"][0]["message"]["content"])
        return resp.status, str(data.get("error", {}).get("message", ""))


def redis_config(tmp: Path, url: str, prefix: str, delay_ms: int) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "chatlane.toml"
    path.write_text(
        f'[agent]\necho_delay_ms = {delay_ms}\n[store]\nbackend = "redis"\nurl = "{url}"\n'
        f'prefix = "{prefix}"\nturn_lock_ttl_s = {TTL_S}\n[http]\nport = 0\n',
        encoding="utf-8",
    )
    return path


async def lock_held(server: RedisServer, prefix: str, key: str) -> None:
    name = f"{prefix}:turn:{hashlib.sha256(key.encode()).hexdigest()}"
    async with asyncio.timeout(10):
        while True:
            with server.client() as r:
                if r.exists(name):
                    return
            await asyncio.sleep(0.01)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


# ------------------------------------------------------------------ Redis: a paused holder
async def test_a_holder_paused_past_its_lease_never_writes_after_the_next_holder(
    tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """A is paused (SIGSTOP) mid-turn past the TTL; B answers the next message; A resumes.
    A's turn is fenced out and answered again after B's, seeing it."""
    prefix = unique_prefix()
    config = redis_config(tmp_path, redis_server.url, prefix, delay_ms=600)
    a = await ChatlaneProcess.start(config, tmp_path / "a.log")
    b = await ChatlaneProcess.start(config, tmp_path / "b.log")
    tally = Tally()
    try:
        for trial in range(10):
            user = f"paused{trial}"
            key = f"agent:main:http:{user}:api"
            first = asyncio.create_task(ask(http, a, f"first {trial}", user))
            await lock_held(redis_server, prefix, key)
            os.kill(a.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(TTL_S * 1.5)
                second = await ask(http, b, f"second {trial}", user)
            finally:
                os.kill(a.pid, signal.SIGCONT)
            replies = {f"first {trial}": await first, f"second {trial}": second}
            tally.trials += 1
            count_commits(redis_commits(redis_server, prefix, key), replies, tally)
            assert "turn 2" in replies[f"first {trial}"][1], replies  # answered after B, seeing it
    finally:
        await a.terminate()
        await b.terminate()
    print(tally.line("paused holder"), *tally.notes, sep="\n  ")
    assert tally.clean(), tally.notes
    assert "fenced out" in a.stderr()


# ------------------------------------------------------------------ Redis: a stalled network
async def test_a_holder_whose_redis_connection_stalls_past_its_lease_is_fenced_out(
    tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """Only A's path to Redis stalls (a proxy stops forwarding) for 2.5 TTLs: its lease
    runs out on time, its turn stops, B answers; after the stall A answers again."""
    prefix = unique_prefix()
    tally = Tally()
    async with proxy_to(redis_server.port) as proxy:
        a = await ChatlaneProcess.start(
            redis_config(tmp_path / "a", proxy.url, prefix, 1500), tmp_path / "a.log"
        )
        b = await ChatlaneProcess.start(
            redis_config(tmp_path / "b", redis_server.url, prefix, 300), tmp_path / "b.log"
        )
        try:
            for trial in range(5):
                user = f"stalled{trial}"
                key = f"agent:main:http:{user}:api"
                first = asyncio.create_task(ask(http, a, f"first {trial}", user))
                await lock_held(redis_server, prefix, key)
                proxy.stall()
                try:
                    await asyncio.sleep(TTL_S * 1.2)
                    second = await ask(http, b, f"second {trial}", user)
                    await asyncio.sleep(max(0.0, TTL_S * 2.5 - TTL_S * 1.2 - 0.3))
                finally:
                    proxy.resume()
                replies = {f"first {trial}": await first, f"second {trial}": second}
                tally.trials += 1
                count_commits(redis_commits(redis_server, prefix, key), replies, tally)
                assert "turn 2" in replies[f"first {trial}"][1], replies
        finally:
            await a.terminate()
            await b.terminate()
    print(tally.line("stalled network"), *tally.notes, sep="\n  ")
    assert tally.clean(), tally.notes
    assert "lost (not renewed in time" in a.stderr()


# ------------------------------------------------------------------ Redis: a dropped reply
async def test_a_commit_retried_after_its_reply_was_lost_is_stored_once(redis_server: RedisServer) -> None:
    """The commit reaches Redis, the connection drops before the answer: redis-py sends
    it again, and the commit id makes the second one a no-op."""
    async with proxy_to(redis_server.port) as proxy:
        settings = StoreSettings(backend="redis", url=proxy.url, prefix=unique_prefix(), turn_lock_ttl_s=5)
        # from_settings probes with a blocking PING: off the loop, which runs the proxy.
        store = await asyncio.to_thread(RedisStore.from_settings, settings, None)
        key = SessionKey("agent:main:http:dropped:api")
        try:
            async with store.lock_turn(key) as lease:
                entry, _ = await Reserver(store).resolve(key)
                # A first commit loads the script, so the dropped request is the commit
                # itself (not an EVALSHA that Redis answers with NOSCRIPT).
                first = ChatMessage("user", "before", 1.0)
                await store.commit(TurnCommit(lease, entry.session_id, uuid.uuid4().hex, [first], 1.0, 1))
                commit_id = uuid.uuid4().hex
                proxy.drop_reply_to(commit_id.encode())
                record = ChatMessage("user", "once", 2.0)
                await store.commit(TurnCommit(lease, entry.session_id, commit_id, [record], 2.0, 2))
            assert proxy.dropped == 1, "the reply to the commit was dropped"
            assert [m.content for m in await store.tail(entry.session_id, 10)] == ["before", "once"]
            after = await store.get(key)
            assert after is not None and after.turns == 2
        finally:
            await store.close()


# ------------------------------------------------------------------ Files: a full disk
async def test_a_disk_that_fills_during_a_two_process_burst_stores_whole_turns_or_none(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Two processes on one state folder on a 2 MiB tmpfs; the disk fills mid-burst and is
    freed again. Every turn is stored whole or not at all, "not answered" only when
    nothing was stored, the count equals the commits, and service recovers unrestarted."""
    disk = tmp_path / "disk"
    with mounted_or_skipped(disk, "-t", "tmpfs", "-o", "size=2m", "tmpfs"):
        config = write_config(tmp_path, "[agent]\necho_delay_ms = 5\n", state=disk / "state")
        procs = [await ChatlaneProcess.start(config, tmp_path / f"p{i}.log") for i in range(2)]
        replies: dict[str, tuple[int, str]] = {}
        user = "burst"
        try:

            async def send(i: int) -> None:
                replies[f"m{i}"] = await ask(http, procs[i % 2], f"m{i}", user)

            await asyncio.gather(*(send(i) for i in range(20)))
            sending = [asyncio.create_task(send(i)) for i in range(20, 60)]
            await asyncio.sleep(0.05)
            filler = await asyncio.to_thread(fill_disk, disk)
            await asyncio.gather(*sending)
            full = [m for m in range(20, 60) if replies[f"m{m}"][0] != 200]
            filler.unlink()
            await asyncio.gather(*(send(i) for i in range(60, 80)))  # no restart
        finally:
            for p in procs:
                await p.terminate()
        entry_path = next((disk / "state" / "sessions").glob("*/*/*.json"))
        sid = json.loads(entry_path.read_bytes())["sessionId"]
        lines = (disk / "state" / "transcripts" / sid[:2] / f"{sid}.jsonl").read_bytes().split(b"\n")
        commits = [json.loads(x) for x in lines if x.strip()]
    tally = Tally(trials=80)
    count_commits(commits, replies, tally)
    failures = [t for s, t in replies.values() if s != 200]
    print(
        tally.line("full disk"),
        f"{len(full)} 'not answered' while full, {len(failures)} in all, {len(commits)} commits",
        *tally.notes,
        sep="\n  ",
    )
    assert full, "the disk filled during the burst (else this test proved nothing)"
    assert all(t == STORE_FAILURE_TEXT for t in failures)
    assert all(replies[f"m{i}"][0] == 200 for i in range(60, 80)), "recovered without a restart"
    assert tally.clean(), tally.notes
    assert commits[-1]["turns"] == sum(1 for s, _ in replies.values() if s == 200)
