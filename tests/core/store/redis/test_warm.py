"""The commits a Redis store keeps of what it wrote last (core/store/redis/warm.py): used
only while the transcript's newest commit is the one kept, so a turn always sees what
another host, a reset or a delete did in between."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from bots.testing import RedisServer, unique_prefix
from core.config import StoreSettings
from core.conversation.reserver import Reserver
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import TurnCommit
from core.store import jsonl
from core.store.redis.store import RedisStore
from core.store.redis.warm import WarmTails

KEY = SessionKey("agent:main:test:carol:general")


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    s = StoreSettings(backend="redis", url=redis_server.url, prefix=unique_prefix())
    a, b = RedisStore.from_settings(s, None), RedisStore.from_settings(s, None)
    yield a, b
    await a.close()
    await b.close()


async def turn(store: RedisStore, text: str) -> list[str]:
    """One turn as the runner takes it: what it saw of the transcript, then its commit."""
    async with store.lock_turn(KEY) as lease:
        entry, _ = await Reserver(store).resolve(KEY)
        seen = [m.content for m in await store.tail(entry.session_id, 40)]
        record = ChatMessage("user", text, time.time())
        commit = TurnCommit(lease, entry.session_id, uuid.uuid4().hex, [record], time.time(), entry.turns + 1)
        await store.commit(commit)
    return seen


async def test_a_turn_sees_what_another_host_committed_after_this_ones_last_turn(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    assert await turn(a, "a1") == []
    assert await turn(a, "a2") == ["a1"]
    assert await turn(b, "b1") == ["a1", "a2"]
    assert await turn(a, "a3") == ["a1", "a2", "b1"]
    assert await turn(a, "a4") == ["a1", "a2", "b1", "a3"]
    entry = await b.get(KEY)
    assert entry is not None and entry.turns == 5


async def test_a_reset_or_a_delete_elsewhere_is_seen_by_the_next_turn(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    await turn(a, "a1")
    await turn(a, "a2")
    fresh = await Reserver(b).reset(KEY)
    assert await turn(a, "after reset") == []
    entry = await a.get(KEY)
    assert entry is not None and entry.session_id == fresh.session_id and entry.turns == 1
    assert await b.delete(KEY, fresh.session_id)
    assert await turn(a, "after delete") == []


async def test_kept_commits_are_used_while_the_newest_commit_is_this_processes(
    redis_server: RedisServer, pair: tuple[RedisStore, RedisStore]
) -> None:
    """The rule, seen from outside: a change that leaves the newest commit alone (nothing
    in chatlane makes one) is not noticed; one that adds a commit is."""
    a, _ = pair
    await turn(a, "a1")
    await turn(a, "a2")
    entry = await a.get(KEY)
    assert entry is not None
    name = a.names.transcript(entry.session_id)
    other = jsonl.encode_commit(uuid.uuid4().hex, 1, 1.0, [ChatMessage("user", "rewritten", 1.0)])
    with redis_server.client() as r:
        r.lset(name, 0, other)
    assert await turn(a, "a3") == ["a1", "a2"], "kept: the newest commit is a's own"
    with redis_server.client() as r:
        r.rpush(name, jsonl.encode_commit(uuid.uuid4().hex, 4, 2.0, [ChatMessage("user", "added", 2.0)]))
    assert await turn(a, "a4") == ["rewritten", "a2", "a3", "added"]


def test_kept_commits_stay_within_their_byte_budget_dropping_the_least_recently_used() -> None:
    warm = WarmTails(max_bytes=1000)
    line = jsonl.encode_commit("0" * 32, 1, 1.0, [ChatMessage("user", "x" * 300, 1.0)])
    for i in range(5):
        warm.keep(f"k{i}", f"s{i}", [line], 64)
        warm.lines("k0")  # k0 is used each time: it stays
    assert warm.lines("k0") is not None
    kept = [k for k in ("k1", "k2", "k3", "k4") if warm.lines(k) is not None]
    assert len(kept) * len(line) + len(line) <= 1000
    assert kept == ["k3", "k4"][-len(kept) :] and kept
