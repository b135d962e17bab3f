"""The Redis store's delivery memory, request claims and per-sender counters.

    <prefix>:delivery:<sha256(id)>   a delivery seen; `SET NX PX window`
    <prefix>:request:<sha256(id)>    an Idempotency-Key request: JSON {fp, answer?}
    <prefix>:limit:<sha256(sender)>:m|d        the sender's count in its minute / day window
    <prefix>:limit:<sha256(sender)>:m|d:told   set once the sender heard "slow down" in it

Each operation is one Lua script or one command, so it is atomic across every process
on the Redis; expiry is Redis's own (PX), so nothing needs sweeping.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis

from core.model import Admission, RequestClaim
from core.store.files.deliveries import parse_claim

# KEYS: the delivery names in order; ARGV[1]: window in ms. Marks in order and stops at
# the first name already there (returning its 1-based index), else 0.
_MARK = """
for i, name in ipairs(KEYS) do
  if not redis.call('SET', name, '1', 'NX', 'PX', ARGV[1]) then
    return i
  end
end
return 0
"""

# KEYS[1] request; ARGV[1] {"fp": ...}, ARGV[2] window in ms. nil if now owned, else the stored JSON.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
"""

# KEYS: minute count, minute told, day count, day told; ARGV: per minute, per day (0 = none).
# Windows start at a sender's first message (the count's expiry); a limited message is not
# counted. Returns 0 allowed, 1 limited and first of its window, 2 limited again.
_COUNT = """
local spans = {60000, 86400000}
for w = 1, 2 do
  local limit = tonumber(ARGV[w])
  if limit > 0 and tonumber(redis.call('GET', KEYS[2 * w - 1]) or '0') >= limit then
    local left = redis.call('PTTL', KEYS[2 * w - 1])
    if left <= 0 then left = spans[w] end
    if redis.call('SET', KEYS[2 * w], '1', 'NX', 'PX', left) then return 1 end
    return 2
  end
end
for w = 1, 2 do
  if tonumber(ARGV[w]) > 0 and redis.call('INCR', KEYS[2 * w - 1]) == 1 then
    redis.call('PEXPIRE', KEYS[2 * w - 1], spans[w])
  end
end
return 0
"""

_ADMISSION: dict[int, Admission] = {0: "allowed", 1: "limited_first", 2: "limited"}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _ms(window_s: float) -> int:
    return max(1, int(window_s * 1000))


class RedisDeliveries:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r = client
        self.prefix = prefix
        self._mark = client.register_script(_MARK)
        self._claim = client.register_script(_CLAIM)
        self._count = client.register_script(_COUNT)

    def request_name(self, request_id: str) -> str:
        return f"{self.prefix}:request:{_digest(request_id)}"

    async def mark_delivered(self, ids: Sequence[str], window_s: float) -> int:
        names = [f"{self.prefix}:delivery:{_digest(i)}" for i in ids]
        return int(cast(Any, await self._mark(keys=names, args=[_ms(window_s)])))

    async def claim_request(self, request_id: str, fingerprint: str, window_s: float) -> RequestClaim:
        mine = json.dumps({"fp": fingerprint})
        raw = await self._claim(keys=[self.request_name(request_id)], args=[mine, _ms(window_s)])
        if raw is None:
            return RequestClaim(new=True)
        return parse_claim(cast(bytes, raw))

    async def finish_request(self, request_id: str, fingerprint: str, answer: bytes, window_s: float) -> None:
        content = json.dumps({"fp": fingerprint, "answer": answer.decode()})
        await self._r.set(self.request_name(request_id), content, px=_ms(window_s))

    async def release_request(self, request_id: str) -> None:
        await self._r.delete(self.request_name(request_id))

    async def count_message(self, sender: str, per_minute: int, per_day: int) -> Admission:
        base = f"{self.prefix}:limit:{_digest(sender)}"
        keys = [f"{base}:m", f"{base}:m:told", f"{base}:d", f"{base}:d:told"]
        verdict = int(cast(Any, await self._count(keys=keys, args=[per_minute, per_day])))
        return _ADMISSION[verdict]
