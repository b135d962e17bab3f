"""The store's `Fires` part, against both backends: a fire is claimed once across
stores on one backing (standing for processes), a claim survives its own retry, a lapsed
claim is taken over, and a schedule's mark never goes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bots.testing import RedisServer, eventually, unique_prefix
from core.config import StoreSettings
from core.model import FireMark
from core.store.base import SessionStore
from core.store.files.store import FileStore
from core.store.redis.store import RedisStore

OpenStore = Callable[[], Awaitable[SessionStore]]
DUE = 1_800_000_000.0


@pytest.fixture(params=["files", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    opened: list[SessionStore] = []
    if request.param == "files":

        async def open_one() -> SessionStore:
            opened.append(FileStore(tmp_path / "state"))
            return opened[-1]

    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = StoreSettings(backend="redis", url=server.url, prefix=unique_prefix())

        async def open_one() -> SessionStore:
            opened.append(RedisStore.from_settings(settings, None))
            return opened[-1]

    yield open_one
    for store in opened:
        await store.close()


async def test_of_many_concurrent_claims_one_owns_the_fire(open_store: OpenStore) -> None:
    stores = [await open_store() for _ in range(4)]
    claims = await asyncio.gather(
        *(s.claim_fire("standup", DUE, f"token-{i}-{n}", 30) for n in range(5) for i, s in enumerate(stores))
    )
    assert [c.state for c in claims].count("mine") == 1
    assert {c.state for c in claims} == {"mine", "taken"}


async def test_a_retried_claim_is_still_its_own(open_store: OpenStore) -> None:
    """redis-py may resend a claim whose reply was lost: the same token gets it again."""
    a, b = await open_store(), await open_store()
    assert (await a.claim_fire("standup", DUE, "mine", 30)).state == "mine"
    again = await a.claim_fire("standup", DUE, "mine", 30)
    assert (again.state, again.takeover) == ("mine", False)
    assert (await b.claim_fire("standup", DUE, "other", 30)).state == "taken"


async def test_a_lapsed_claim_is_taken_over_and_a_finished_one_is_done(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    assert (await a.claim_fire("s", DUE, "first", 0.2)).state == "mine"
    assert not await b.renew_fire("s", DUE, "second", 30)

    async def taken_over() -> bool:
        claim = await b.claim_fire("s", DUE, "second", 30)
        return claim.state == "mine" and claim.takeover

    await eventually(taken_over, timeout=5)
    assert not await a.renew_fire("s", DUE, "first", 30)  # the first owner lost it
    assert await b.renew_fire("s", DUE, "second", 30)
    await b.finish_fire("s", DUE, "second", "answered")
    done = await a.claim_fire("s", DUE, "third", 30)
    assert (done.state, done.outcome) == ("done", "answered")


async def test_the_mark_only_advances_and_makes_earlier_fires_done(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    assert await a.fire_mark("s") is None
    await a.claim_fire("s", DUE, "t", 30)  # claimed, never finished (its owner died)
    stored = await a.advance_fire_mark("s", FireMark(DUE + 60, "s@x", "answered", time.time()))
    assert stored.due == DUE + 60
    older = await b.advance_fire_mark("s", FireMark(DUE, "s@y", "missed", time.time()))
    assert (older.due, older.outcome) == (DUE + 60, "answered")  # never lowered
    assert (await b.fire_mark("s")) == stored
    # A process with an old view of the mark cannot fire a passed slot again.
    assert (await b.claim_fire("s", DUE, "late", 30)).state == "done"
    assert (await b.claim_fire("s", DUE + 60, "late", 30)).state == "done"
    assert (await b.claim_fire("s", DUE + 120, "late", 30)).state == "mine"
    assert await a.fire_mark("other") is None


async def test_saved_schedules_are_seen_by_every_store_until_dropped(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    await a.save_schedule("remind-1", b'{"name": "remind-1"}')
    await a.save_schedule("remind-2", b"{}")
    assert await b.saved_schedules() == {"remind-1": b'{"name": "remind-1"}', "remind-2": b"{}"}
    await b.drop_schedule("remind-1")
    assert list(await a.saved_schedules()) == ["remind-2"]
