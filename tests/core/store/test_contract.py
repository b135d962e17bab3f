"""The `SessionStore` contract, proved against every backend: `files` and `redis`.

Each test runs once per backend. "Several stores" stand for several processes: two
`FileStore`s on one folder, or two `RedisStore`s (two connection pools) on one Redis;
they share nothing but the store itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bots.testing import RedisServer, unique_prefix
from core.config import StoreSettings
from core.conversation.reserver import Freshness, Reserver, new_session_id
from core.model.errors import Fenced
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import SessionEntry, TurnCommit
from core.store.base import SessionStore
from core.store.files.store import FileStore
from core.store.redis.store import RedisStore
from tests.core.store.turns import store_turn

KEY = SessionKey("agent:main:test:alice:general")
OTHER = SessionKey("agent:main:test:bob:general")

OpenStore = Callable[[], Awaitable[SessionStore]]


@pytest.fixture(params=["files", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores that share one backing (folder or Redis prefix); closes them after."""
    opened: list[SessionStore] = []
    if request.param == "files":

        async def open_one() -> SessionStore:
            store = FileStore(tmp_path / "state")
            opened.append(store)
            return store

    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = StoreSettings(backend="redis", url=server.url, prefix=unique_prefix(), turn_lock_ttl_s=5)

        async def open_one() -> SessionStore:
            store = RedisStore.from_settings(settings, None)
            opened.append(store)
            return store

    yield open_one
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> SessionStore:
    return await open_store()


def mint_at(at: float) -> Callable[[SessionKey], SessionEntry]:
    def mint(key: SessionKey) -> SessionEntry:
        return SessionEntry(key, new_session_id(), key.split(":")[2], at, at, at, at)

    return mint


def always(_: SessionEntry) -> bool:
    return True


def never(_: SessionEntry) -> bool:
    return False


async def test_get_of_an_unknown_key_is_none(store: SessionStore) -> None:
    assert await store.get(KEY) is None


async def test_reserve_mints_once_then_adopts_while_fresh(store: SessionStore) -> None:
    first, created = await store.reserve(KEY, always, mint_at(1.0))
    again, created_again = await store.reserve(KEY, always, mint_at(2.0))
    assert created and not created_again
    assert again == first
    assert await store.get(KEY) == first


async def test_reserve_replaces_a_stale_entry_with_a_new_session(store: SessionStore) -> None:
    old, _ = await store.reserve(KEY, always, mint_at(1.0))
    new, created = await store.reserve(KEY, never, mint_at(2.0))
    assert created and new.session_id != old.session_id
    assert await store.get(KEY) == new


async def test_entries_round_trip_every_field(store: SessionStore) -> None:
    entry = SessionEntry(KEY, new_session_id(), "test", 1.5, 2.25, 3.125, 4.0625, turns=7)
    await store.reserve(KEY, always, lambda _: entry)
    assert await store.get(KEY) == entry
    assert await store.get(OTHER) is None


async def test_a_commit_stores_the_turn_and_advances_the_entry(store: SessionStore) -> None:
    first = await store_turn(
        store, KEY, [ChatMessage("user", "hi", 1.0), ChatMessage("assistant", "yo", 2.0)]
    )
    assert first.turns == 1
    second = await store_turn(store, KEY, [ChatMessage("user", "again", 3.0)], at=60.0)
    assert (second.turns, second.last_interaction_at) == (2, 60.0)
    assert second.session_id == first.session_id
    assert [m.content for m in await store.tail(first.session_id, 10)] == ["hi", "yo", "again"]
    assert await store.get(OTHER) is None


async def test_a_commit_with_a_stale_fencing_token_is_refused_and_stores_nothing(
    open_store: OpenStore,
) -> None:
    """The holder of an older lease (a paused or cut-off process) can no longer write."""
    a, b = await open_store(), await open_store()
    entry, _ = await a.reserve(KEY, always, mint_at(1.0))
    async with a.lock_turn(KEY) as old:
        pass
    async with b.lock_turn(KEY) as new:
        assert new.token > old.token
        stale = TurnCommit(old, entry.session_id, new_session_id(), [ChatMessage("user", "late")], 2.0, 1)
        with pytest.raises(Fenced):
            await a.commit(stale)
        await b.commit(
            TurnCommit(new, entry.session_id, new_session_id(), [ChatMessage("user", "now")], 3.0, 1)
        )
    assert [m.content for m in await a.tail(entry.session_id, 10)] == ["now"]
    stored = await a.get(KEY)
    assert stored is not None and stored.turns == 1


async def test_a_commit_after_a_reset_is_refused(store: SessionStore) -> None:
    """A turn that started before a reset (in another process) must not land in either session."""
    old, _ = await store.reserve(KEY, always, mint_at(1.0))
    async with store.lock_turn(KEY) as lease:
        new = await store.reset(KEY, mint_at(2.0))
        with pytest.raises(Fenced):
            await store.commit(
                TurnCommit(lease, old.session_id, new_session_id(), [ChatMessage("user", "x")], 3.0, 1)
            )
    assert await store.tail(old.session_id, 5) == []
    assert await store.get(KEY) == new


async def test_a_retried_commit_is_stored_once(store: SessionStore) -> None:
    entry, _ = await store.reserve(KEY, always, mint_at(1.0))
    async with store.lock_turn(KEY) as lease:
        commit = TurnCommit(lease, entry.session_id, new_session_id(), [ChatMessage("user", "once")], 2.0, 1)
        await store.commit(commit)
        await store.commit(commit)
    assert [m.content for m in await store.tail(entry.session_id, 10)] == ["once"]
    stored = await store.get(KEY)
    assert stored is not None and stored.turns == 1


async def test_turns_from_two_stores_all_count(open_store: OpenStore) -> None:
    """Every committed turn counts, from whichever process it came."""
    a, b = await open_store(), await open_store()
    async with asyncio.timeout(60):
        await asyncio.gather(*(store_turn(s, KEY, [ChatMessage("user", "t")]) for s in [a, b] * 10))
    final = await a.get(KEY)
    assert final is not None and final.turns == 20
    assert len(await a.tail(final.session_id, 100)) == 20


async def test_list_shows_every_entry(store: SessionStore) -> None:
    assert (await store.list()).entries == []
    a = await store_turn(store, KEY, [ChatMessage("user", "hi")])
    assert a.turns == 1
    b, _ = await store.reserve(OTHER, always, mint_at(2.0))
    listing = await store.list()
    assert sorted(listing.entries, key=lambda e: e.key) == [a, b]
    assert listing.damaged == []


async def test_commits_then_tail_returns_the_newest_records_in_order(store: SessionStore) -> None:
    sid = new_session_id()
    assert await store.tail(sid, 10) == []
    await store_turn(store, KEY, [ChatMessage("user", f"m{i}", float(i)) for i in range(5)])
    await store_turn(store, KEY, [], count=False)
    await store_turn(store, KEY, [ChatMessage("assistant", "a5", 5.0)])
    entry = await store.get(KEY)
    assert entry is not None
    sid = entry.session_id
    tail = await store.tail(sid, 3)
    assert [m.content for m in tail] == ["m3", "m4", "a5"]
    assert [m.content for m in await store.tail(sid, 100)] == ["m0", "m1", "m2", "m3", "m4", "a5"]
    assert await store.tail(sid, 0) == []
    assert await store.tail(new_session_id(), 5) == []


async def test_transcript_records_keep_every_field(store: SessionStore) -> None:
    records = [
        ChatMessage("user", 'héllo\nwörld 🎉 "quoted"', 1.25, "msg-1"),
        ChatMessage("user", "cut off", 2.5, "msg-2", interrupted=True),
        ChatMessage("system", "", 3.0),
    ]
    entry = await store_turn(store, KEY, records)
    assert await store.tail(entry.session_id, 10) == records


async def test_a_malformed_session_id_is_refused(store: SessionStore) -> None:
    with pytest.raises(ValueError, match="malformed session id"):
        await store.tail("../../etc/passwd", 5)
    with pytest.raises(ValueError, match="malformed session id"):
        await store.tail("*", 5)


async def test_turn_lock_excludes_turns_of_one_key(open_store: OpenStore) -> None:
    """Eight turns of one key through two stores: never two inside at once."""
    stores = [await open_store(), await open_store()]
    inside = 0
    most = 0
    order: list[int] = []

    async def turn(i: int) -> None:
        nonlocal inside, most
        async with stores[i % 2].lock_turn(KEY):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            order.append(i)
            inside -= 1

    async with asyncio.timeout(30):
        await asyncio.gather(*(turn(i) for i in range(8)))
    assert most == 1
    assert sorted(order) == list(range(8))


async def test_turn_lock_of_one_key_does_not_block_another(store: SessionStore) -> None:
    held = asyncio.Event()
    done = asyncio.Event()

    async def hold_key() -> None:
        async with store.lock_turn(KEY):
            held.set()
            await done.wait()

    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(hold_key())
        await held.wait()
        async with store.lock_turn(OTHER):
            done.set()


async def test_turn_lock_is_released_when_the_turn_fails(store: SessionStore) -> None:
    async with asyncio.timeout(30):
        with pytest.raises(RuntimeError, match="agent blew up"):
            async with store.lock_turn(KEY):
                raise RuntimeError("agent blew up")
        async with store.lock_turn(KEY):
            pass


async def test_waiters_cancelled_at_any_point_leave_the_turn_lock_free(store: SessionStore) -> None:
    """A waiter cancelled mid-acquire (even one whose acquire just won) must not keep the
    lock: the next turn gets it at once, not after the Redis TTL (5 s here)."""
    for ticks in range(0, 40, 3):
        lock = store.lock_turn(KEY)
        waiter = asyncio.create_task(lock.__aenter__())
        for _ in range(ticks):
            await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.wait({waiter})
        if not waiter.cancelled():  # it won the lock before the cancel landed: a normal turn
            await lock.__aexit__(None, None, None)
        async with asyncio.timeout(2.5), store.lock_turn(KEY):
            pass


async def test_100_concurrent_reserves_on_one_key_mint_one_session(open_store: OpenStore) -> None:
    """The store alone (no reserver, so no in-process lock) keeps the mint unique."""
    stores = [await open_store(), await open_store()]
    async with asyncio.timeout(60):
        results = await asyncio.gather(
            *(stores[i % 2].reserve(KEY, always, mint_at(float(i))) for i in range(100))
        )
    assert sum(created for _, created in results) == 1
    assert len({entry.session_id for entry, _ in results}) == 1
    stored = await stores[0].get(KEY)
    assert stored is not None and stored.session_id == results[0][0].session_id


async def test_a_reset_racing_50_resolves_wins(open_store: OpenStore) -> None:
    """Five reservers (five "processes") resolve a stale key while one resets it.

    The old session is stale, so every resolve goes through `reserve`. Whatever the
    interleaving: nothing returns the old id, at most one resolve mints before the
    reset lands, and afterwards the key maps to the reset's session for good.
    """
    now = time.time()
    freshness = Freshness(mode="idle", idle_minutes=1)
    reservers = [Reserver(await open_store(), freshness) for _ in range(5)]
    old, _ = await reservers[0].store.reserve(KEY, always, mint_at(now - 3600))
    async with asyncio.timeout(60):
        racing = [asyncio.create_task(reservers[i % 5].resolve(KEY)) for i in range(50)]
        await asyncio.sleep(0)
        reset = await reservers[0].reset(KEY)
        results = await asyncio.gather(*racing)
        after = await asyncio.gather(*(r.resolve(KEY) for r in reservers * 4))
    seen = {entry.session_id for entry, _ in results}
    assert old.session_id not in seen
    assert len(seen - {reset.session_id}) <= 1
    assert {entry.session_id for entry, _ in after} == {reset.session_id}
    assert not any(created for _, created in after)
    stored = await reservers[0].store.get(KEY)
    assert stored is not None and stored.session_id == reset.session_id
