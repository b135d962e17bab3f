"""Attachment bytes on Redis, content-addressed per session and bounded.

    <prefix>:blobs:<sessionId>        a hash: sha256 -> bytes
    <prefix>:blob-order:<sessionId>   the digests, oldest first

One Lua script stores a message's blobs and drops the oldest past `blobs_max`, so the
hash and its order list never disagree, however many processes write at once. Storing
a digest again is a no-op that only makes it the newest (idempotent, for retried turns).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import cast

import redis.asyncio as aioredis

_PUT = """
local max = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('LREM', KEYS[2], 0, ARGV[i])
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
local extra = redis.call('LLEN', KEYS[2]) - max
if extra > 0 then
  local old = redis.call('LRANGE', KEYS[2], 0, extra - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('LTRIM', KEYS[2], extra, -1)
end
return 0
"""


class RedisBlobs:
    def __init__(self, client: aioredis.Redis, prefix: str, blobs_max: int) -> None:
        self._r = client
        self.prefix = prefix
        self.blobs_max = blobs_max
        self._put = client.register_script(_PUT)

    def names(self, session_id: str) -> tuple[str, str]:
        """The hash and the order list of a (validated) session id."""
        return f"{self.prefix}:blobs:{session_id}", f"{self.prefix}:blob-order:{session_id}"

    async def put(self, session_id: str, data: Mapping[str, bytes]) -> None:
        if not data:
            return
        args: list[bytes | str | int] = [self.blobs_max]
        for digest, blob in data.items():
            args += [digest, blob]
        await self._put(keys=list(self.names(session_id)), args=args)

    async def get(self, session_id: str, digests: Sequence[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return {}
        blobs, _ = self.names(session_id)
        values = await cast("Awaitable[list[bytes | None]]", self._r.hmget(blobs, wanted))
        return {d: v for d, v in zip(wanted, values, strict=True) if v is not None}
