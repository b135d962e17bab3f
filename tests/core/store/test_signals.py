"""The `Signals` part of the store contract (`/stop` across processes), on every backend."""

from __future__ import annotations

import asyncio

from core.model.keys import SessionKey
from tests.core.store.contract import KEY, OTHER, OpenStore


async def test_a_stop_request_is_counted_and_seen_by_another_store(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    assert await b.stop_requests(KEY) == 0
    await a.request_stop(KEY)
    assert await b.stop_requests(KEY) == 1
    await b.request_stop(KEY)
    assert await a.stop_requests(KEY) == 2
    assert await a.stop_requests(OTHER) == 0  # per key


async def test_stop_requests_racing_from_two_stores_all_count(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    async with asyncio.timeout(30):
        await asyncio.gather(*((a, b)[i % 2].request_stop(KEY) for i in range(20)))
    assert await a.stop_requests(KEY) == 20


async def test_stop_requests_many_reads_every_key_as_another_store_counts_it(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    keys = [SessionKey(f"agent:main:test:u{i}:general") for i in range(150)]  # past the files' on-loop batch
    for i, key in enumerate(keys[:10]):
        for _ in range(i % 3):
            await a.request_stop(key)
    got = await b.stop_requests_many(keys)
    assert got == {key: (i % 3 if i < 10 else 0) for i, key in enumerate(keys)}
    assert await b.stop_requests_many(keys[:2]) == {keys[0]: 0, keys[1]: 1}
    assert await b.stop_requests_many([]) == {}
