"""The process's one stop poller (core/turn/stopwatch.py): a `/stop` taken by another
process on the store stops the turn running here, on both backends, and many running
turns share one batched read of their stop counters instead of one read each.

Two gateways on one store stand for two processes (tests/bots/test_stop.py does it with
real `chatlane run` processes). The stores are the real backends, subclassed only to
count the stop-counter reads they serve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from bots.testing import RedisServer, Replies, SlowStreamAgent, eventually, unique_prefix
from core.agents.base import Agent
from core.config import Config, QueueSettings, StoreSettings
from core.door.gateway import Gateway
from core.model.keys import SessionKey
from core.model.messages import Inbound
from core.store.base import SessionStore
from core.store.files.store import FileStore
from core.store.redis.store import RedisStore
from core.turn.stopwatch import StopPoller

POLL_S = 0.1
TURNS = 30


class Reads:
    """What a counting store was asked: single reads (baselines) and batch sizes."""

    def __init__(self) -> None:
        self.single = 0
        self.batches: list[int] = []


class CountingFiles(FileStore):
    reads = Reads()

    async def stop_requests(self, key: SessionKey) -> int:
        self.reads.single += 1
        return await super().stop_requests(key)

    async def stop_requests_many(self, keys: Sequence[SessionKey]) -> dict[SessionKey, int]:
        self.reads.batches.append(len(keys))
        return await super().stop_requests_many(keys)


class CountingRedis(RedisStore):
    reads = Reads()

    async def stop_requests(self, key: SessionKey) -> int:
        self.reads.single += 1
        return await super().stop_requests(key)

    async def stop_requests_many(self, keys: Sequence[SessionKey]) -> dict[SessionKey, int]:
        self.reads.batches.append(len(keys))
        return await super().stop_requests_many(keys)


OpenGateway = Callable[..., Awaitable[tuple[Gateway, Reads]]]


@pytest.fixture(params=["files", "redis"])
async def open_gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenGateway]:
    """Gateways on one store backing (folder or Redis prefix), each with its own counts."""
    made: list[Gateway] = []
    prefix = unique_prefix()

    async def open_one(agent: Agent, poll_s: float = POLL_S) -> tuple[Gateway, Reads]:
        reads = Reads()
        store: SessionStore
        if request.param == "files":
            files = CountingFiles(tmp_path / "state")
            files.reads = reads
            store = files
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            settings = StoreSettings(backend="redis", url=server.url, prefix=prefix)
            red = CountingRedis.from_settings(settings, None)
            assert isinstance(red, CountingRedis)
            red.reads = reads
            store = red
        gw = Gateway(Config(queue=QueueSettings(stop_poll_s=poll_s)), store, agent)
        made.append(gw)
        return gw, reads

    yield open_one
    for gw in made:
        await gw.close(timeout=5)
        await gw.store.close()


def ask(user: str, text: str) -> Inbound:
    return Inbound("test", user, "general", text, message_id=f"{user}-{text}")


def key_of(user: str) -> SessionKey:
    return SessionKey(f"agent:main:test:{user}:general")


async def test_a_stop_from_another_process_stops_its_turn_among_many_sharing_one_batched_poll(
    open_gateway: OpenGateway,
) -> None:
    agent = SlowStreamAgent(40, 0.05)  # 2 s a turn: many polls while all of them run
    running, reads = await open_gateway(agent)
    other, _ = await open_gateway(SlowStreamAgent())
    users = [f"u{i}" for i in range(TURNS)]
    asked = {u: Replies() for u in users}
    for u in users:
        await running.submit(ask(u, "long answer please"), asked[u])
    poller = running.turns.stops
    await eventually(lambda: poller.watched == TURNS, timeout=20)
    began, batches_before = time.monotonic(), len(reads.batches)

    assert await other.stop(key_of("u0")) is False  # not running there: passed on through the store
    await eventually(lambda: asked["u0"].replies, timeout=10)
    async with asyncio.timeout(60):
        for u in users:
            await asyncio.wait_for(asked[u].done.wait(), timeout=60)
    elapsed = time.monotonic() - began
    batches = len(reads.batches) - batches_before

    assert [r.kind for r in asked["u0"].replies] == ["stopped"]
    assert all([r.kind for r in asked[u].replies] == ["answer"] for u in users[1:])
    # One read per turn: its baseline under the turn lock. Polls are batches, at most two
    # an interval whatever the number of turns (one task per turn made TURNS an interval).
    assert reads.single == TURNS
    assert batches <= 2 * elapsed / POLL_S + 3, (batches, elapsed)
    assert max(reads.batches) > 1, "running turns are read together"
    await eventually(lambda: not poller.polling, timeout=5)  # nothing running: no poller left


async def test_a_turn_shorter_than_the_poll_interval_costs_no_read_beyond_its_baseline(
    open_gateway: OpenGateway,
) -> None:
    agent = SlowStreamAgent(2, 0.001)
    gw, reads = await open_gateway(agent, poll_s=5.0)  # far beyond a turn, even on a loaded machine
    for i in range(5):
        done = Replies()
        await gw.submit(ask("quick", f"m{i}"), done)
        async with asyncio.timeout(10):
            await done.done.wait()
        assert [r.kind for r in done.replies] == ["answer"]
    assert reads.single == 5
    assert reads.batches == []
    assert not gw.turns.stops.polling  # the poller left with the last turn, not a poll later


class _Counters:
    """Stop counters that never change (a StopCounters for the poller alone)."""

    def __init__(self) -> None:
        self.batches = 0

    async def stop_requests(self, key: SessionKey) -> int:
        return 0

    async def stop_requests_many(self, keys: Sequence[SessionKey]) -> dict[SessionKey, int]:
        self.batches += 1
        return dict.fromkeys(keys, 0)


async def test_the_poller_task_starts_only_when_a_turn_outlasts_the_interval() -> None:
    """A turn that ends within the interval costs a timer, never a task; one that runs on
    is read by a task that starts at its due time and goes with the last turn."""
    counters = _Counters()
    poller = StopPoller(counters, lambda: 0.05, lambda key: True)
    key = SessionKey("agent:main:test:u:c")
    tasks_before = {t.get_name() for t in asyncio.all_tasks()}
    async with poller.watch(key):
        assert poller.polling
        assert "stop poller" not in {t.get_name() for t in asyncio.all_tasks()} - tasks_before
    assert not poller.polling
    async with poller.watch(key):
        await eventually(lambda: counters.batches >= 1, timeout=5)
        assert "stop poller" in {t.get_name() for t in asyncio.all_tasks()}
    read = counters.batches
    await eventually(lambda: not poller.polling, timeout=5)
    await asyncio.sleep(0.15)  # three intervals
    assert counters.batches == read  # nothing read once no turn is watched
    assert "stop poller" not in {t.get_name() for t in asyncio.all_tasks() if not t.done()}
