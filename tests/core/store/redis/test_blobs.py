"""Redis's attachment bytes: at most `blobs_max` per session, the hash and its order in step."""

from __future__ import annotations

import asyncio
import hashlib
from typing import cast

import redis

from bots.testing import RedisServer, unique_prefix
from core.config import StoreSettings
from core.conversation.reserver import new_session_id
from core.store.redis.store import RedisStore


def blob(data: bytes) -> dict[str, bytes]:
    return {hashlib.sha256(data).hexdigest(): data}


async def test_redis_keeps_at_most_blobs_max_per_session_dropping_the_oldest(
    redis_server: RedisServer,
) -> None:
    settings = StoreSettings(backend="redis", url=redis_server.url, prefix=unique_prefix(), blobs_max=3)
    store = RedisStore.from_settings(settings, None)
    sid = new_session_id()
    datas = [f"file {i}".encode() for i in range(5)]
    try:
        for data in datas:
            await store.put_blobs(sid, blob(data))
        digests = [hashlib.sha256(d).hexdigest() for d in datas]
        assert set(await store.get_blobs(sid, digests)) == set(digests[2:])
    finally:
        await store.close()


async def test_redis_blob_hash_and_order_agree_after_concurrent_writers(redis_server: RedisServer) -> None:
    settings = StoreSettings(backend="redis", url=redis_server.url, prefix=unique_prefix(), blobs_max=5)
    stores = [RedisStore.from_settings(settings, None) for _ in range(2)]
    sid = new_session_id()
    try:
        await asyncio.gather(
            *(s.put_blobs(sid, blob(f"{n}-{i}".encode())) for n, s in enumerate(stores) for i in range(20))
        )
        r = redis.Redis.from_url(redis_server.url)
        try:
            hashed = {k.decode() for k in cast("list[bytes]", r.hkeys(f"{settings.prefix}:blobs:{sid}"))}
            order = cast("list[bytes]", r.lrange(f"{settings.prefix}:blob-order:{sid}", 0, -1))
            ordered = [d.decode() for d in order]
        finally:
            r.close()
        assert len(ordered) == 5
        assert hashed == set(ordered)
    finally:
        for s in stores:
            await s.close()
