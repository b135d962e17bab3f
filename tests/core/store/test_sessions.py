"""The `Sessions` part of the store contract, on every backend (contract.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.conversation.reserver import Freshness, Reserver, new_session_id
from core.model.sessions import SessionEntry
from core.store.base import Sessions
from tests.core.store.contract import KEY, OTHER, OpenStore, always, mint_at, never


@pytest.fixture
async def sessions(open_store: OpenStore) -> Sessions:
    return await open_store()


async def test_get_of_an_unknown_key_is_none(sessions: Sessions) -> None:
    assert await sessions.get(KEY) is None


async def test_reserve_mints_once_then_adopts_while_fresh(sessions: Sessions) -> None:
    first, created = await sessions.reserve(KEY, always, mint_at(1.0))
    again, created_again = await sessions.reserve(KEY, always, mint_at(2.0))
    assert created and not created_again
    assert again == first
    assert await sessions.get(KEY) == first


async def test_reserve_replaces_a_stale_entry_with_a_new_session(sessions: Sessions) -> None:
    old, _ = await sessions.reserve(KEY, always, mint_at(1.0))
    new, created = await sessions.reserve(KEY, never, mint_at(2.0))
    assert created and new.session_id != old.session_id
    assert await sessions.get(KEY) == new


async def test_entries_round_trip_every_field(sessions: Sessions) -> None:
    entry = SessionEntry(KEY, new_session_id(), "test", 1.5, 2.25, 3.125, 4.0625, turns=7)
    await sessions.reserve(KEY, always, lambda _: entry)
    assert await sessions.get(KEY) == entry
    assert await sessions.get(OTHER) is None


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


async def test_list_shows_every_entry(sessions: Sessions) -> None:
    assert (await sessions.list()).entries == []
    a, _ = await sessions.reserve(KEY, always, mint_at(1.0))
    b, _ = await sessions.reserve(OTHER, always, mint_at(2.0))
    listing = await sessions.list()
    assert sorted(listing.entries, key=lambda e: e.key) == [a, b]
    assert listing.damaged == []


async def test_delete_removes_only_the_session_it_names(open_store: OpenStore) -> None:
    """A compare-and-delete: a session minted meanwhile (in another process) stays."""
    a, b = await open_store(), await open_store()
    old, _ = await a.reserve(KEY, always, mint_at(1.0))
    new = await b.reset(KEY, mint_at(2.0))
    assert not await a.delete(KEY, old.session_id)
    assert await a.get(KEY) == new
    assert await b.delete(KEY, new.session_id)
    assert await a.get(KEY) is None
    assert not await a.delete(KEY, new.session_id)  # already gone
    assert [e.key for e in (await a.list()).entries] == []
