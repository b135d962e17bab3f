"""The `SenderLimits` part of the store contract (`[limits]`), on every backend."""

from __future__ import annotations

import asyncio

from tests.core.store.contract import OpenStore


async def test_limits_hold_across_stores_and_tell_the_sender_once(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    verdicts = await asyncio.gather(*((a, b)[i % 2].count_message("slack:U1", 5, 0) for i in range(12)))
    assert sorted(verdicts) == ["allowed"] * 5 + ["limited"] * 6 + ["limited_first"]
    assert await a.count_message("slack:U2", 5, 0) == "allowed"  # another sender has a budget of its own


async def test_the_daily_limit_counts_only_allowed_messages(open_store: OpenStore) -> None:
    store = await open_store()
    got = [await store.count_message("http:bob", 0, 2) for _ in range(4)]
    assert got == ["allowed", "allowed", "limited_first", "limited"]
