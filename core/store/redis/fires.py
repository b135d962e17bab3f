"""The Redis store's scheduled fires.

    <prefix>:fires:<sha256(schedule)>   a hash: `mark` -> the schedule's mark (JSON);
                                        `<due ms>` -> one fire {token, state, exp, outcome}
    <prefix>:schedules                  a hash: name -> a schedule made at runtime

Each operation is one Lua script on the schedule's hash, so a claim is atomic across
every process on the Redis. Lease expiry is measured with Redis's own clock (`TIME`),
so hosts with skewed clocks agree on when a claim lapsed. A fire at or before the
mark is done whether or not its field is still there; fields of passed fires are
deleted when the mark advances, and the hash expires after `KEEP_S` without use.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import redis.asyncio as aioredis

from core.model import FireClaim, FireMark, FireState, StoreError

KEEP_S = 90 * 86_400
"""A schedule's hash outlives its last use by this much (a schedule removed from config)."""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function passed(due)
  local raw = redis.call('HGET', KEYS[1], 'mark')
  if not raw then return nil end
  local m = cjson.decode(raw)
  if due <= math.floor(m.due * 1000 + 0.5) then return m end
  return nil
end
"""

# ARGV: due ms, token, lease ms, keep s. -> {state, outcome, takeover}
_CLAIM = (
    _NOW
    + """
local due = tonumber(ARGV[1])
local m = passed(due)
if m then
  local outcome = ''
  if due == math.floor(m.due * 1000 + 0.5) then outcome = m.outcome or '' end
  return {'done', outcome, '0'}
end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local takeover = false
if raw then
  local f = cjson.decode(raw)
  if f.state == 'done' then return {'done', f.outcome or '', '0'} end
  if f.token ~= ARGV[2] then
    if tonumber(f.exp) > now then return {'taken', '', '0'} end
    takeover = true
  else
    takeover = f.takeover == true
  end
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({token = ARGV[2], state = 'claimed',
  exp = now + tonumber(ARGV[3]), takeover = takeover}))
redis.call('EXPIRE', KEYS[1], ARGV[4])
if takeover then return {'mine', '', '1'} end
return {'mine', '', '0'}
"""
)

# ARGV: due ms, token, lease ms. -> 1 renewed, 0 not this token's
_RENEW = (
    _NOW
    + """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local f = cjson.decode(raw)
if f.token ~= ARGV[2] or f.state ~= 'claimed' then return 0 end
f.exp = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(f))
return 1
"""
)

# ARGV: due ms, token, outcome, keep s.
_FINISH = (
    _NOW
    + """
if passed(tonumber(ARGV[1])) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({token = ARGV[2], state = 'done', exp = 0,
  outcome = ARGV[3]}))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

# ARGV: the mark (JSON), its due ms, keep s. -> the stored mark (JSON)
_ADVANCE = """
local raw = redis.call('HGET', KEYS[1], 'mark')
if raw then
  local m = cjson.decode(raw)
  if math.floor(m.due * 1000 + 0.5) >= tonumber(ARGV[2]) then return raw end
end
redis.call('HSET', KEYS[1], 'mark', ARGV[1])
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local due = tonumber(field)
  if due and due <= tonumber(ARGV[2]) then redis.call('HDEL', KEYS[1], field) end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return ARGV[1]
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _ms(due: float) -> int:
    return round(due * 1000)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _mark(raw: Any) -> FireMark:
    try:
        return FireMark.from_json(json.loads(raw))
    except ValueError as exc:
        raise StoreError(f"a schedule mark is damaged: {exc}") from None


class RedisFires:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._r = client
        self.prefix = prefix
        self.saved_name = f"{prefix}:schedules"
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._advance = client.register_script(_ADVANCE)

    def name(self, schedule: str) -> str:
        return f"{self.prefix}:fires:{_digest(schedule)}"

    async def claim(self, schedule: str, due: float, token: str, lease_s: float) -> FireClaim:
        args: list[str | int] = [_ms(due), token, max(1, round(lease_s * 1000)), KEEP_S]
        state, outcome, takeover = cast(list[Any], await self._claim(keys=[self.name(schedule)], args=args))
        return FireClaim(cast(FireState, _text(state)), _text(takeover) == "1", _text(outcome))

    async def renew(self, schedule: str, due: float, token: str, lease_s: float) -> bool:
        args: list[str | int] = [_ms(due), token, max(1, round(lease_s * 1000))]
        return bool(await self._renew(keys=[self.name(schedule)], args=args))

    async def finish(self, schedule: str, due: float, token: str, outcome: str) -> None:
        await self._finish(keys=[self.name(schedule)], args=[_ms(due), token, outcome, KEEP_S])

    async def mark(self, schedule: str) -> FireMark | None:
        raw = await cast(Any, self._r.hget(self.name(schedule), "mark"))
        return None if raw is None else _mark(raw)

    async def advance(self, schedule: str, mark: FireMark) -> FireMark:
        args: list[str | int] = [json.dumps(mark.to_json()), _ms(mark.due), KEEP_S]
        return _mark(await self._advance(keys=[self.name(schedule)], args=args))

    async def save(self, name: str, spec: bytes) -> None:
        await cast(Any, self._r.hset(self.saved_name, name, spec.decode()))

    async def saved_all(self) -> dict[str, bytes]:
        raw = await cast(Any, self._r.hgetall(self.saved_name))
        return {_text(k): v if isinstance(v, bytes) else str(v).encode() for k, v in raw.items()}

    async def drop(self, name: str) -> None:
        await cast(Any, self._r.hdel(self.saved_name, name))
