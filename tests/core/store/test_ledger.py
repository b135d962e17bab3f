"""The `Ledger` part of the store contract (turn locks, commits, tails), on every backend.

A ledger needs the `Sessions` part of its store: a commit is fenced by the entry's
session id, and the entry's progress is read from the last commit.
"""

from __future__ import annotations

import asyncio

import pytest

from core.conversation.reserver import new_session_id
from core.model.errors import Fenced
from core.model.messages import ChatMessage
from core.model.sessions import TurnCommit
from core.store.base import SessionStore
from tests.core.store.contract import KEY, OTHER, RELEASED_WITHIN_S, OpenStore, always, mint_at
from tests.core.store.turns import store_turn


@pytest.fixture
async def store(open_store: OpenStore) -> SessionStore:
    return await open_store()


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
    other_taken_while_held = False

    async def hold_key() -> None:
        async with store.lock_turn(KEY):
            held.set()
            await done.wait()

    async def take_other() -> None:
        nonlocal other_taken_while_held
        await held.wait()
        async with store.lock_turn(OTHER):
            other_taken_while_held = not done.is_set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(hold_key())
        try:
            async with asyncio.timeout(RELEASED_WITHIN_S):
                await take_other()
        finally:
            done.set()
    assert other_taken_while_held


async def test_turn_lock_is_released_when_the_turn_fails(open_store: OpenStore) -> None:
    """Another store (process) takes the key's lock at once, not after the Redis TTL."""
    a, b = await open_store(), await open_store()
    with pytest.raises(RuntimeError, match="agent blew up"):
        async with a.lock_turn(KEY) as failed:
            raise RuntimeError("agent blew up")
    async with asyncio.timeout(RELEASED_WITHIN_S), b.lock_turn(KEY) as next_turn:
        assert next_turn.token == failed.token + 1


async def test_waiters_cancelled_at_any_point_leave_the_turn_lock_free(store: SessionStore) -> None:
    """A waiter cancelled mid-acquire (even one whose acquire just won) must not keep the
    lock: the next turn gets it at once, not after the Redis TTL."""
    for ticks in range(0, 40, 3):
        lock = store.lock_turn(KEY)
        waiter = asyncio.create_task(lock.__aenter__())
        for _ in range(ticks):
            await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.wait({waiter})
        if not waiter.cancelled():  # it won the lock before the cancel landed: a normal turn
            await lock.__aexit__(None, None, None)
        async with asyncio.timeout(RELEASED_WITHIN_S), store.lock_turn(KEY):
            pass


async def test_list_shows_each_entry_as_its_last_commit_left_it(store: SessionStore) -> None:
    a = await store_turn(store, KEY, [ChatMessage("user", "hi")], at=50.0)
    assert (a.turns, a.last_interaction_at) == (1, 50.0)
    b, _ = await store.reserve(OTHER, always, mint_at(2.0))
    listing = await store.list()
    assert sorted(listing.entries, key=lambda e: e.key) == [a, b]
