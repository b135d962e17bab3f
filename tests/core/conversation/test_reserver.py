"""The reserver: concurrent resolves adopt one session; resets win; freshness policies."""

from __future__ import annotations

import asyncio
from datetime import datetime

from core.conversation.reserver import Freshness, KeyLocks, Reserver
from core.model.keys import SessionKey
from core.model.sessions import SessionEntry
from core.store.files.store import FileStore

KEY = SessionKey("agent:main:test:alice:general")


async def test_100_concurrent_resolves_of_a_new_key_mint_exactly_once(store: FileStore) -> None:
    reserver = Reserver(store)
    async with asyncio.timeout(30):
        results = await asyncio.gather(*(reserver.resolve(KEY) for _ in range(100)))
    assert len({entry.session_id for entry, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert reserver.mints == 1


async def test_two_reservers_on_one_store_adopt_one_session(store: FileStore) -> None:
    """Two reservers stand for two processes: only the store's lock is shared."""
    a, b = Reserver(store), Reserver(store)
    async with asyncio.timeout(30):
        results = await asyncio.gather(*(r.resolve(KEY) for r in [a, b] * 25))
    assert len({e.session_id for e, _ in results}) == 1
    assert a.mints + b.mints == 1


async def test_a_reset_racing_50_resolves_wins(store: FileStore) -> None:
    reserver = Reserver(store)
    old, _ = await reserver.resolve(KEY)
    async with asyncio.timeout(30):
        tasks = [asyncio.create_task(reserver.resolve(KEY)) for _ in range(50)]
        new = await reserver.reset(KEY)
        await asyncio.gather(*tasks)
        after = await asyncio.gather(*(reserver.resolve(KEY) for _ in range(50)))
    assert new.session_id != old.session_id
    assert {e.session_id for e, _ in after} == {new.session_id}
    stored = await store.get(KEY)
    assert stored is not None and stored.session_id == new.session_id


async def test_idle_sessions_go_stale_and_a_new_one_is_minted(store: FileStore) -> None:
    now = [1_000_000.0]
    reserver = Reserver(store, Freshness(mode="idle", idle_minutes=30), clock=lambda: now[0])
    first, _ = await reserver.resolve(KEY)
    now[0] += 29 * 60
    assert (await reserver.resolve(KEY))[0].session_id == first.session_id
    now[0] += 2 * 60
    second, created = await reserver.resolve(KEY)
    assert created and second.session_id != first.session_id


def entry_started_at(ts: float) -> SessionEntry:
    return SessionEntry(KEY, "0" * 32, "test", ts, ts, ts, ts)


def test_daily_sessions_end_at_the_configured_local_hour() -> None:
    policy = Freshness(mode="daily", at_hour=4)
    started = datetime(2026, 3, 10, 3, 0).timestamp()
    entry = entry_started_at(started)
    assert policy.is_fresh(entry, datetime(2026, 3, 10, 3, 59).timestamp())
    assert not policy.is_fresh(entry, datetime(2026, 3, 10, 4, 0, 1).timestamp())
    later = entry_started_at(datetime(2026, 3, 10, 5, 0).timestamp())
    assert policy.is_fresh(later, datetime(2026, 3, 11, 3, 59).timestamp())
    assert not policy.is_fresh(later, datetime(2026, 3, 11, 4, 0, 1).timestamp())


def test_mode_none_never_goes_stale() -> None:
    assert Freshness().is_fresh(entry_started_at(0.0), 10**10)


async def test_key_locks_are_forgotten_when_idle() -> None:
    locks = KeyLocks()
    for i in range(1000):
        async with locks.hold(f"k{i}"):
            pass
    assert len(locks) == 0
