"""What only the Redis store does: many OS processes, kill -9, Redis restarts, damage.

The multi-process tests start this module as a worker (`python -m
tests.core.store.redis.test_redis '<spec>'`): a real `Gateway` on a `RedisStore`, fed messages
as JSON lines on stdin, reporting what happened as JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bots.testing import RecordingAgent, RedisServer, Replies, eventually, free_port, unique_prefix
from core.agents.base import TurnInput
from core.agents.echo import EchoAgent
from core.config import Config, QueueSettings, StoreSettings
from core.conversation.reserver import Reserver, new_session_id
from core.door.gateway import Gateway
from core.model.errors import Fenced, StoreError
from core.model.keys import SessionKey
from core.model.messages import ChatMessage, Inbound, Reply
from core.store.redis.store import RedisStore
from core.store.redis.urls import safe_url
from core.turn.responders import QuietResponder
from core.turn.runner import STORE_FAILURE_TEXT
from tests.core.store.turns import store_turn
from tests.support.skips import cannot_run_here

KEY = SessionKey("agent:main:test:alice:general")
ROOT = Path(__file__).resolve().parents[4]
Event = dict[str, Any]


def settings(server: RedisServer, **changes: Any) -> StoreSettings:
    return StoreSettings(backend="redis", url=server.url, prefix=unique_prefix(), **changes)


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    s = RedisStore.from_settings(settings(redis_server), None)
    yield s
    await s.close()


def inbound(text: str, message_id: str = "") -> Inbound:
    return Inbound("test", "alice", "general", text, message_id or new_session_id()[:12])


# ----------------------------------------------------------------- connecting


def test_unreachable_redis_is_a_clear_startup_error_without_the_password() -> None:
    url = f"redis://bot:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreError) as caught:
        RedisStore.from_settings(StoreSettings(backend="redis", url=url), "also-secret")
    message = str(caught.value)
    assert "cannot reach Redis at redis://***@127.0.0.1:" in message
    assert "hunter2" not in message and "also-secret" not in message


def test_a_url_that_is_not_redis_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="is not a Redis URL"):
        RedisStore.from_settings(StoreSettings(backend="redis", url="http://127.0.0.1:1/"), None)


def test_safe_url_drops_every_part_of_the_userinfo_and_password_options() -> None:
    assert safe_url("rediss://u:p4ss@host.example:6380/2?password=p4ss&ssl_cert_reqs=none") == (
        "rediss://***@host.example:6380/2?ssl_cert_reqs=none"
    )
    assert safe_url("redis://:p4ss@[::1]:6379") == "redis://***@[::1]:6379"
    assert safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "password", ["s3cr#et99", "s3cr?et99", "s3cr/et99", "s3cr@et99", "s3cr:et99", "s3#r@t/?:9"]
)
def test_no_piece_of_a_password_with_url_delimiters_is_ever_printed(password: str) -> None:
    url = f"redis://user:{password}@127.0.0.1:1/0"
    shown = safe_url(url)
    pieces = {p for p in re.split(r"[#?/@:]", password) if len(p) >= 2}
    assert not any(p in shown for p in pieces | {"user"}), shown
    with pytest.raises(StoreError) as caught:
        RedisStore.from_settings(StoreSettings(backend="redis", url=url), None)
    assert not any(p in str(caught.value) for p in pieces), caught.value


# ------------------------------------------------------------- keys and data


async def test_every_redis_key_has_the_prefix_and_no_raw_session_key(
    redis_server: RedisServer, store: RedisStore
) -> None:
    await store_turn(store, KEY, [ChatMessage("user", "hi")])
    async with store.lock_turn(KEY):
        with redis_server.client() as r:
            names = [n.decode() for n in r.scan_iter(match=f"{store.prefix}:*")]
    # No `attempt` (a reserve's MULTI marker): a first session minted under the turn lock
    # is one SET NX script (core/store/redis/entries.py)
    kinds = ["commit", "entry", "fence", "transcript", "turn"]
    assert sorted(n.split(":")[1] for n in names) == kinds
    assert not any("alice" in n or "general" in n for n in names)


async def test_two_prefixes_on_one_redis_do_not_see_each_other(redis_server: RedisServer) -> None:
    a = RedisStore.from_settings(settings(redis_server), None)
    b = RedisStore.from_settings(settings(redis_server), None)
    try:
        await Reserver(a).resolve(KEY)
        assert await b.get(KEY) is None
        assert (await b.list()).entries == []
        assert len((await a.list()).entries) == 1
    finally:
        await a.close()
        await b.close()


async def test_transcripts_are_trimmed_to_transcript_max(redis_server: RedisServer) -> None:
    s = RedisStore.from_settings(settings(redis_server, transcript_max=5), None)
    try:
        for i in range(8):
            entry = await store_turn(s, KEY, [ChatMessage("user", f"m{i}")])
        sid = entry.session_id
        assert [m.content for m in await s.tail(sid, 100)] == ["m3", "m4", "m5", "m6", "m7"]
        with redis_server.client() as r:
            assert r.llen(s.names.transcript(sid)) == 5
    finally:
        await s.close()


async def test_list_scans_past_one_batch(store: RedisStore) -> None:
    keys = [SessionKey(f"agent:main:test:u{i}:general") for i in range(1200)]
    reserver = Reserver(store)
    async with asyncio.timeout(60):
        await asyncio.gather(*(reserver.resolve(k) for k in keys))
    listing = await store.list()
    assert sorted(e.key for e in listing.entries) == sorted(keys)


async def test_a_damaged_entry_is_reported_quarantined_and_its_session_kept(
    redis_server: RedisServer, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    sid = new_session_id()
    damaged = f'{{"key": "{KEY}", "sessionId": "{sid}", "turns": 4, "platf'.encode()
    with redis_server.client() as r:
        r.set(store.names.entry(KEY), damaged)
    assert await store.get(KEY) is None
    listing = await store.list()
    assert [(d.where, d.key) for d in listing.damaged] == [(store.names.entry(KEY), KEY)]
    entry, created = await store.reserve(KEY, lambda _: True, Reserver(store).mint)
    assert (entry.session_id, entry.turns, created) == (sid, 4, False)
    assert "is damaged" in caplog.text
    listing = await store.list()
    assert listing.entries == [entry]
    assert [(d.reason, d.key) for d in listing.damaged] == [("quarantined", KEY)]
    with redis_server.client() as r:
        (moved,) = r.scan_iter(match=f"{store.prefix}:quarantine:*")
        assert r.get(moved) == damaged


async def test_a_value_of_the_wrong_redis_type_is_quarantined_not_overwritten(
    redis_server: RedisServer, store: RedisStore
) -> None:
    with redis_server.client() as r:
        r.rpush(store.names.entry(KEY), b"not", b"an entry")
    assert await store.get(KEY) is None
    assert [d.reason for d in (await store.list()).damaged] == ["the Redis value has the wrong type"]
    entry, created = await Reserver(store).resolve(KEY)
    assert created
    with redis_server.client() as r:
        (moved,) = r.scan_iter(match=f"{store.prefix}:quarantine:*")
        assert r.lrange(moved, 0, -1) == [b"not", b"an entry"]
    assert (await store.list()).entries == [entry]


# ----------------------------------------------------------------- turn lock


async def test_a_live_turn_keeps_its_lock_beyond_the_ttl(redis_server: RedisServer) -> None:
    s = settings(redis_server, turn_lock_ttl_s=1.0)
    a, b = RedisStore.from_settings(s, None), RedisStore.from_settings(s, None)
    events: list[str] = []

    async def long_turn() -> None:
        async with a.lock_turn(KEY):
            events.append("a in")
            await asyncio.sleep(2.2)  # more than two TTLs
            events.append("a out")

    try:
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            tg.create_task(long_turn())
            await eventually(lambda: events)
            async with b.lock_turn(KEY):
                events.append("b in")
        assert events == ["a in", "a out", "b in"]
    finally:
        await a.close()
        await b.close()


async def test_a_lost_turn_lock_stops_the_turn_and_frees_nobody_elses_lock(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock vanishes under a live turn (as after a long pause): the turn is stopped
    with Fenced, and its release leaves the new owner's lock alone."""
    s = settings(redis_server, turn_lock_ttl_s=1.5)
    a, b = RedisStore.from_settings(s, None), RedisStore.from_settings(s, None)
    b_holds, b_done = asyncio.Event(), asyncio.Event()

    async def b_turn() -> None:
        async with b.lock_turn(KEY):
            b_holds.set()
            await b_done.wait()

    async def a_turn(tg: asyncio.TaskGroup) -> None:
        async with a.lock_turn(KEY):
            with redis_server.client() as r:
                r.delete(a.names.lock(KEY))
            tg.create_task(b_turn())
            await b_holds.wait()
            await asyncio.sleep(30)  # stopped by the lock keeper long before

    try:
        async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
            with pytest.raises(Fenced, match="lost the turn lock"):
                await a_turn(tg)
            with redis_server.client() as r:
                assert r.exists(a.names.lock(KEY)) == 1  # still b's
            b_done.set()
        assert "lost (not renewed in time, or taken)" in caplog.text
    finally:
        await a.close()
        await b.close()


async def test_a_cancelled_turn_ends_even_when_its_lock_renewal_loses_the_cancel(
    redis_server: RedisServer,
) -> None:
    """On Python 3.11, redis-py's `asyncio.wait_for` around a socket write drops a cancel
    that lands as the write completes: the lock keeper runs on as if never cancelled.
    The turn's end must not wait for that keeper forever (a shutdown and a benchmark
    hung so). Here the renewal returns normally from a cancel, as redis-py then does."""
    s = settings(redis_server, turn_lock_ttl_s=0.6)
    store = RedisStore.from_settings(s, None)
    locks = store._turn_locks
    real_renew = locks._renew
    renewing, lost = asyncio.Event(), asyncio.Event()

    async def renew_that_loses_a_cancel(**kwargs: Any) -> Any:
        renewing.set()
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            lost.set()  # the cancel is dropped: the write "completed" first
        return await real_renew(**kwargs)

    locks._renew = renew_that_loses_a_cancel  # type: ignore[assignment]

    async def turn() -> None:
        async with store.lock_turn(KEY):
            await asyncio.Event().wait()

    try:
        running = asyncio.create_task(turn())
        async with asyncio.timeout(5):
            await renewing.wait()  # the keeper (after a third of the TTL) is in a renewal
        running.cancel()
        async with asyncio.timeout(5):
            await asyncio.wait({running})
        assert running.cancelled() and lost.is_set()
        with redis_server.client() as r:
            assert r.exists(store.names.lock(KEY)) == 0  # released, not left to expire
        keepers = [t for t in asyncio.all_tasks() if t.get_name() == f"turn lock {KEY}"]
        assert keepers == []
    finally:
        await store.close()


async def test_a_waiter_cancelled_while_its_lock_request_is_in_redis_gives_the_lock_back(
    redis_server: RedisServer, store: RedisStore
) -> None:
    """Redis is stalled (DEBUG SLEEP) while the waiter's SET NX is queued in it, then the
    waiter is cancelled: the SET still wins after the stall, so the store must wait for
    it and release, or the key would be locked for a whole TTL (30 s here)."""
    with redis_server.client() as r:
        if not r.config_get("enable-debug-command"):
            cannot_run_here(
                "this redis-server has no enable-debug-command option (Redis before 7.0), "
                "so a stalled Redis cannot be made with DEBUG SLEEP"
            )
    await store.ping()  # a warm connection, so the waiter's SET is sent at once
    async with asyncio.timeout(20):
        with redis_server.client() as r:
            stall = asyncio.create_task(asyncio.to_thread(r.execute_command, "DEBUG", "SLEEP", "0.6"))
            await asyncio.sleep(0.2)
            lock = store.lock_turn(KEY)
            waiter = asyncio.create_task(lock.__aenter__())
            await asyncio.sleep(0.2)
            waiter.cancel()
            await asyncio.wait({waiter})
            await stall
        assert waiter.cancelled()
    async with asyncio.timeout(5), store.lock_turn(KEY):
        pass


# ------------------------------------------------------------ Redis restarts


async def test_redis_down_is_a_store_error_and_the_store_recovers(
    private_redis_server: RedisServer,
) -> None:
    s = RedisStore.from_settings(settings(private_redis_server), None)
    try:
        await Reserver(s).resolve(KEY)
        private_redis_server.stop()
        async with asyncio.timeout(30):
            with pytest.raises(StoreError, match=r"Redis at redis://127\.0\.0\.1:\d+/0: get failed"):
                await s.get(KEY)
            with pytest.raises(StoreError):
                await store_turn(s, KEY, [ChatMessage("user", "lost")])
            private_redis_server.restart()
            assert await s.get(KEY) is None  # the server kept nothing: --save ""
            entry, created = await Reserver(s).resolve(KEY)
        assert created and await s.get(KEY) == entry
    finally:
        await s.close()


async def test_a_turn_whose_store_write_fails_is_reported_and_not_answered(
    private_redis_server: RedisServer,
) -> None:
    s = RedisStore.from_settings(settings(private_redis_server), None)
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gateway = Gateway(Config(), s, agent)
    try:
        async with asyncio.timeout(60):
            first = Replies()
            await gateway.submit(inbound("hello"), first)
            await agent.started.wait()
            private_redis_server.stop()
            agent.release.set()
            await first.done.wait()
            assert [(r.kind, r.text) for r in first.replies] == [("failure", STORE_FAILURE_TEXT)]
            private_redis_server.restart()
            second = Replies()
            await gateway.submit(inbound("again"), second)
            await second.done.wait()
        assert [r.kind for r in second.replies] == ["answer"]
        assert "echo: again" in second.replies[0].text
    finally:
        await gateway.close(5)
        await s.close()


# ------------------------------------------------------------ many processes


class Worker:
    """One worker OS process; its stdout events are collected as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc, self.stderr = proc, stderr
        self.events: list[Event] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, spec: dict[str, Any], stderr: Path) -> Worker:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.core.store.redis.test_redis",
                json.dumps(spec),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                env=env,
            )
        return cls(proc, stderr)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))
        self.events.append({"event": "exit"})

    async def wait_for(
        self, match: Callable[[Event], bool], count: int = 1, timeout: float = 60
    ) -> list[Event]:
        await eventually(
            lambda: (
                len([e for e in self.events if match(e)]) >= count
                or any(e["event"] == "exit" for e in self.events)
            ),
            timeout=timeout,
        )
        found = [e for e in self.events if match(e)]
        if len(found) < count:
            raise AssertionError(f"worker exited early: {self.stderr.read_text()[-2000:]}")
        return found

    async def send(self, obj: dict[str, Any] | str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        await self.proc.stdin.drain()

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e["event"] == kind]

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.send("quit")
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


@contextlib.asynccontextmanager
async def workers(n: int, spec: dict[str, Any], tmp_path: Path) -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for i in range(n):
            started.append(await Worker.start(spec, tmp_path / f"worker{i}.err"))
        for w in started:
            await w.wait_for(lambda e: e["event"] == "ready")
        yield started
    finally:
        for w in started:
            await w.close()


def is_reply(e: Event) -> bool:
    return bool(e["event"] == "reply")


@pytest.mark.slow
async def test_four_processes_share_one_session_and_never_overlap_turns(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    spec = {"url": redis_server.url, "prefix": unique_prefix(), "ttl": 5.0, "delay": 0.01}
    async with asyncio.timeout(120), workers(4, spec, tmp_path) as procs:
        for i in range(50):
            await procs[i % 4].send({"text": f"m{i}", "id": f"id{i}"})
        for i, w in enumerate(procs):
            await w.wait_for(is_reply, count=len(range(i, 50, 4)))
    replies = [e for w in procs for e in w.of("reply")]
    assert {e["kind"] for e in replies} == {"answer"}
    assert len({e["session"] for e in replies}) == 1
    assert sorted(e["turn"] for e in replies) == list(range(1, 51))
    assert all("first thing I remember you saying" in e["text"] for e in replies if e["turn"] > 1)
    spans = sorted((s["t"], e["t"]) for w in procs for s, e in zip(w.of("start"), w.of("end"), strict=True))
    assert len(spans) == 50
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two turns of one key overlapped"
    assert sum(1 for w in procs if w.of("reply")) == 4


@pytest.mark.slow
async def test_a_process_killed_holding_the_turn_lock_is_taken_over_after_expiry(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    ttl = 1.0
    prefix = unique_prefix()
    spec = {"url": redis_server.url, "prefix": prefix, "ttl": ttl, "delay": 0.01}
    async with asyncio.timeout(120), workers(2, spec, tmp_path) as (a, b):
        for i in (1, 2):
            await a.send({"text": f"m{i}", "id": f"id{i}"})
        acked = await a.wait_for(is_reply, count=2)
        await a.send({"text": "slow", "id": "id3"})
        await a.wait_for(lambda e: e["event"] == "start" and e["text"] == "slow")
        await b.send({"text": "m4", "id": "id4"})
        await asyncio.sleep(2.5 * ttl)
        assert not b.of("start"), "b got in while a's live turn held the lock"
        os.kill(a.proc.pid, signal.SIGKILL)
        (taken_over,) = await b.wait_for(is_reply)
    assert [e["turn"] for e in acked] == [1, 2]
    assert taken_over["kind"] == "answer"
    assert taken_over["turn"] == 3
    assert taken_over["session"] == acked[0]["session"] == acked[1]["session"]
    s = RedisStore.from_settings(StoreSettings(backend="redis", url=redis_server.url, prefix=prefix), None)
    try:
        memory = await s.tail(taken_over["session"], 100)
    finally:
        await s.close()
    assert [m.content for m in memory if m.role == "user"] == ["m1", "m2", "m4"]
    assert [m.content for m in memory if m.role == "assistant"] == [e["text"] for e in [*acked, taken_over]]


# ------------------------------------------------------ the worker process side


def _emit(obj: Event) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class _TimedAgent:
    """Echo that reports when each turn starts and ends; the text "slow" takes a minute."""

    name = "timed"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._echo = EchoAgent()

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        text = " / ".join(m.content for m in turn.new_messages)
        _emit({"event": "start", "text": text, "turn": turn.turn, "t": time.monotonic()})
        await asyncio.sleep(60 if text == "slow" else self.delay_s)
        async for piece in self._echo.stream(turn):
            yield piece
        _emit({"event": "end", "text": text, "turn": turn.turn, "t": time.monotonic()})

    async def close(self) -> None:
        return None


class _Report(QuietResponder):
    def __init__(self, message_id: str) -> None:
        self.message_id = message_id

    async def send(self, reply: Reply) -> None:
        _emit(
            {
                "event": "reply",
                "id": self.message_id,
                "kind": reply.kind,
                "turn": reply.turn,
                "session": reply.session_id,
                "text": reply.text,
            }
        )


async def _worker(spec: dict[str, Any]) -> None:
    store = RedisStore.from_settings(
        StoreSettings(backend="redis", url=spec["url"], prefix=spec["prefix"], turn_lock_ttl_s=spec["ttl"]),
        None,
    )
    gateway = Gateway(Config(queue=QueueSettings(cap=1000)), store, _TimedAgent(spec["delay"]))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _emit({"event": "ready", "pid": os.getpid()})
    try:
        async for line in reader:
            msg = json.loads(line)
            if msg == "quit":
                break
            await gateway.submit(inbound(msg["text"], msg["id"]), _Report(msg["id"]))
    finally:
        await gateway.close(10)
        await store.close()


@contextlib.contextmanager
def _quiet_sigpipe() -> Iterator[None]:
    """The parent may be gone (a failed test): leave without a traceback."""
    try:
        yield
    except BrokenPipeError:
        os._exit(1)


if __name__ == "__main__":
    with _quiet_sigpipe():
        asyncio.run(_worker(json.loads(sys.argv[1])))
