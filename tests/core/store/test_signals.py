"""The `Signals` part of the store contract (`/stop` across processes), on every backend."""

from __future__ import annotations

import asyncio

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
