"""The Redis store's delivery memory, request claims, per-sender counters and stop requests.

    <prefix>:delivery:<sha256(id)>   a delivery seen: the marking call's token, `PX window`
    <prefix>:request:<sha256(id)>    an Idempotency-Key request: JSON {fp, owner, answer?}
    <prefix>:request:<sha256(id)>:lease   its owner's lease: the owner token, `PX lease`
    <prefix>:limit:<sha256(sender)>:m|d        the sender's count in its minute / day window
    <prefix>:limit:<sha256(sender)>:m|d:told   set once the sender heard "slow down" in it
    <prefix>:limit:<sha256(sender)>:attempt:<token>   a counting call's verdict, for a minute
    <prefix>:stop:<sha256(key)>:attempt:<token>       a stop request counted, for a minute

Each operation is one Lua script, so it is atomic across every process on the Redis;
expiry is Redis's own (PX), so nothing needs sweeping.

A lost reply. redis-py sends a command again after a connection error; when only the
reply of the first attempt was lost, the retry meets that attempt's effect. Every
script that is not idempotent by itself therefore carries a token of its call (the
same in every attempt) and recognises its own effect: a delivery marked with the
caller's token is still a first delivery, a claim held by the caller's owner token is
still the caller's, a counting or stop call already counted returns what it counted.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis

from core.model import Admission, RequestClaim
from core.store.files.deliveries import parse_claim

_ATTEMPT_MS = 60_000
"""How long a call's token is kept: far past redis-py's retries (about 2.5 s)."""

# KEYS: the delivery names in order; ARGV[1]: window in ms, ARGV[2]: this call's token.
# Marks in order and stops at the first name marked by another call (returning its
# 1-based index), else 0.
_MARK = """
for i, name in ipairs(KEYS) do
  if not redis.call('SET', name, ARGV[2], 'NX', 'PX', ARGV[1]) then
    if redis.call('GET', name) ~= ARGV[2] then return i end
  end
end
return 0
"""

# KEYS[1] request, KEYS[2] its lease; ARGV[1] owner token, ARGV[2] {"fp", "owner"} JSON,
# ARGV[3] fingerprint, ARGV[4] lease ms, ARGV[5] window ms. nil if the caller owns the
# request now (new, its own claim retried, or the same request whose owner's lease
# lapsed before it answered); else the stored JSON.
_CLAIM = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, obj = pcall(cjson.decode, raw)
  if not ok or type(obj) ~= 'table' or obj.answer ~= nil then return raw end
  if obj.owner == ARGV[1] then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
    return false
  end
  if obj.fp ~= ARGV[3] or redis.call('EXISTS', KEYS[2]) == 1 then return raw end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[5])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
return false
"""

# KEYS[1] request, KEYS[2] lease; ARGV[1] owner, ARGV[2] lease ms. 1 if still the owner.
_RENEW = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, obj = pcall(cjson.decode, raw)
if not ok or type(obj) ~= 'table' or obj.owner ~= ARGV[1] or obj.answer ~= nil then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1] request, KEYS[2] lease; ARGV[1] owner, ARGV[2] the answered JSON, ARGV[3] window
# ms. The first answer stays: an owner whose lease lapsed and was taken over may finish
# after its successor, or before it.
_FINISH = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, obj = pcall(cjson.decode, raw)
  if ok and type(obj) == 'table' and obj.answer ~= nil and obj.owner ~= ARGV[1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS[1] request, KEYS[2] lease; ARGV[1] owner. Forgets an unanswered claim of the owner.
_RELEASE = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, obj = pcall(cjson.decode, raw)
  if ok and type(obj) == 'table' and obj.owner == ARGV[1] and obj.answer == nil then
    redis.call('DEL', KEYS[1])
  end
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 0
"""

# KEYS: minute count, minute told, day count, day told, this call's attempt; ARGV: per
# minute, per day (0 = none), attempt ms. Windows start at a sender's first message (the
# count's expiry); a limited message is not counted. Returns 0 allowed, 1 limited and
# first of its window, 2 limited again; a retried call returns its first verdict.
_COUNT = """
local done = redis.call('GET', KEYS[5])
if done then return tonumber(done) end
local spans = {60000, 86400000}
local verdict = 0
for w = 1, 2 do
  local limit = tonumber(ARGV[w])
  if limit > 0 and tonumber(redis.call('GET', KEYS[2 * w - 1]) or '0') >= limit then
    local left = redis.call('PTTL', KEYS[2 * w - 1])
    if left <= 0 then left = spans[w] end
    if redis.call('SET', KEYS[2 * w], '1', 'NX', 'PX', left) then verdict = 1 else verdict = 2 end
    break
  end
end
if verdict == 0 then
  for w = 1, 2 do
    if tonumber(ARGV[w]) > 0 and redis.call('INCR', KEYS[2 * w - 1]) == 1 then
      redis.call('PEXPIRE', KEYS[2 * w - 1], spans[w])
    end
  end
end
redis.call('SET', KEYS[5], verdict, 'PX', ARGV[3])
return verdict
"""

# KEYS[1] the stop counter, KEYS[2] this call's attempt; ARGV[1] counter ttl s, ARGV[2]
# attempt ms. One INCR per call, however often it is sent.
_STOP = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 0
"""

_ADMISSION: dict[int, Admission] = {0: "allowed", 1: "limited_first", 2: "limited"}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _ms(window_s: float) -> int:
    return max(1, int(window_s * 1000))


def _token() -> str:
    return uuid.uuid4().hex


class RedisDeliveries:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r = client
        self.prefix = prefix
        self._mark = client.register_script(_MARK)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)
        self._count = client.register_script(_COUNT)
        self._stop = client.register_script(_STOP)

    def request_names(self, request_id: str) -> list[str]:
        """The request's record and its owner's lease."""
        name = f"{self.prefix}:request:{_digest(request_id)}"
        return [name, f"{name}:lease"]

    async def mark_delivered(self, ids: Sequence[str], window_s: float) -> int:
        names = [f"{self.prefix}:delivery:{_digest(i)}" for i in ids]
        return int(cast(Any, await self._mark(keys=names, args=[_ms(window_s), _token()])))

    async def claim_request(
        self, request_id: str, fingerprint: str, owner: str, lease_s: float, window_s: float
    ) -> RequestClaim:
        mine = json.dumps({"fp": fingerprint, "owner": owner})
        raw = await self._claim(
            keys=self.request_names(request_id),
            args=[owner, mine, fingerprint, _ms(lease_s), _ms(window_s)],
        )
        if raw is None:
            return RequestClaim(new=True, fingerprint=fingerprint, owner=owner)
        return parse_claim(cast(bytes, raw))

    async def renew_request(self, request_id: str, owner: str, lease_s: float) -> bool:
        return bool(await self._renew(keys=self.request_names(request_id), args=[owner, _ms(lease_s)]))

    async def finish_request(
        self, request_id: str, owner: str, fingerprint: str, answer: bytes, window_s: float
    ) -> None:
        content = json.dumps({"fp": fingerprint, "owner": owner, "answer": answer.decode()})
        await self._finish(keys=self.request_names(request_id), args=[owner, content, _ms(window_s)])

    async def release_request(self, request_id: str, owner: str) -> None:
        await self._release(keys=self.request_names(request_id), args=[owner])

    async def count_message(self, sender: str, per_minute: int, per_day: int) -> Admission:
        base = f"{self.prefix}:limit:{_digest(sender)}"
        keys = [f"{base}:m", f"{base}:m:told", f"{base}:d", f"{base}:d:told", f"{base}:attempt:{_token()}"]
        verdict = int(cast(Any, await self._count(keys=keys, args=[per_minute, per_day, _ATTEMPT_MS])))
        return _ADMISSION[verdict]

    async def request_stop(self, name: str, ttl_s: int) -> None:
        """One INCR of the stop counter `name` (kept `ttl_s`), however often redis-py sends it."""
        await self._stop(keys=[name, f"{name}:attempt:{_token()}"], args=[ttl_s, _ATTEMPT_MS])
