"""The Redis store's durable inbox: per conversation, a hash of items and a sorted set of
the pending ones; an index of the conversations with pending items; owner leases.

    <prefix>:inbox:<sha256(key)>         hash: i:<id> the item (JSON), o:<id> its owner,
                                         t:<id> turns started on it, m:<id> its answer
                                         messages (JSON list), a:<id> the first of them
                                         (all that older versions write and read)
    <prefix>:inbox-order:<sha256(key)>   sorted set: pending item ids by seq
    <prefix>:inbox-parked:<sha256(key)>  sorted set: parked (poison) item ids by seq
    <prefix>:inbox-seq:<sha256(key)>     the key's seq counter
    <prefix>:inbox-keys                  sorted set: keys with pending items (the index)
    <prefix>:alive:<owner>               an owner's lease (`SET PX`), renewed by `heartbeat`
    <prefix>:quarantine:inbox:<sha>:<ns> a damaged item moved aside

Every write is one script, so it is atomic across hosts. `append` is idempotent on the
item id (the per-attempt token): redis-py's retry of a script whose reply was lost finds
the item and returns it instead of storing it twice. Answered = committed: the commit
script runs `DONE_LUA` for the ids the turn answered, in the same script that stores
the turn (core/store/redis/store.py). An owner whose lease lapsed (its process died or
lost Redis for a whole lease) is dead: `adopt` hands its items over, atomically.

A process that was cut off from Redis for a lease finds out by its own clock (no
renewal reached Redis within `LEASE_SAFE` of a lease: `lease_held` turns False) or when
a renewal finds its lease expired: its items may have been adopted, so it gives up what
it runs and holds (core/door/resume.py). The commit script refuses to mark as answered
an item whose owner field is not the committing process (`Fenced`, "disowned"), so a
late commit of a given-up turn never stores a second answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import redis.asyncio as aioredis

from core.model import InboxItem, InboxView, SessionKey, answer_ids_of, validate_key
from core.store.redis.entries import digest
from core.store.redis.lock import redis_errors

log = logging.getLogger("chatlane.inbox")

# Lua run with KEYS[i] = hash, KEYS[i+1] = order, KEYS[i+2] = index; `key` the session
# key, `ids` a table of item ids: takes them out of the pending set.
DONE_LUA = """
local function inbox_done(hash, order, index, key, ids)
  for _, id in ipairs(ids) do
    redis.call('zrem', order, id)
    redis.call('hdel', hash, 'i:' .. id, 'o:' .. id, 't:' .. id, 'a:' .. id, 'm:' .. id)
  end
  if redis.call('zcard', order) == 0 then redis.call('zrem', index, key) end
end
"""

# Lua run before the commit script stores anything: `nil` when every answered item is
# pending and owned by `owner`, else why not.
OWNED_LUA = """
local function inbox_not_owned(hash, owner, ids)
  for _, id in ipairs(ids) do
    if redis.call('hget', hash, 'o:' .. id) ~= owner then return 'disowned' end
  end
  return nil
end
"""

LEASE_SAFE = 0.8
"""The share of a lease after its last renewal that this process still counts as its
own: the rest is a margin for clock drift and edits already in flight."""

# KEYS: hash, order, seq, index; ARGV: id, item JSON, owner, key, at.
_APPEND = """
if redis.call('hexists', KEYS[1], 'i:' .. ARGV[1]) == 1 then
  return tonumber(redis.call('zscore', KEYS[2], ARGV[1]) or '0')
end
local seq = redis.call('incr', KEYS[3])
redis.call('hset', KEYS[1], 'i:' .. ARGV[1], ARGV[2], 'o:' .. ARGV[1], ARGV[3])
redis.call('zadd', KEYS[2], seq, ARGV[1])
redis.call('zadd', KEYS[4], 'NX', ARGV[5], ARGV[4])
return seq
"""

# KEYS: hash, order; ARGV: me, alive prefix, ids...
_ADOPT = """
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('zscore', KEYS[2], id) then
    local owner = redis.call('hget', KEYS[1], 'o:' .. id)
    if owner == ARGV[1] or not owner or redis.call('exists', ARGV[2] .. owner) == 0 then
      redis.call('hset', KEYS[1], 'o:' .. id, ARGV[1])
      out[#out + 1] = id
    end
  end
end
return out
"""

# KEYS: hash; ARGV: id, answer ids (JSON list; '' none given), the first of them ('' none),
# attempt (0/1). Idempotent but for the attempt, which a retried note may count twice.
_NOTE = """
if redis.call('hexists', KEYS[1], 'i:' .. ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  redis.call('hset', KEYS[1], 'm:' .. ARGV[1], ARGV[2])
  if ARGV[3] ~= '' then redis.call('hset', KEYS[1], 'a:' .. ARGV[1], ARGV[3])
  else redis.call('hdel', KEYS[1], 'a:' .. ARGV[1]) end
end
if ARGV[4] == '1' then redis.call('hincrby', KEYS[1], 't:' .. ARGV[1], 1) end
return 1
"""

# KEYS: hash, order, index, parked; ARGV: key, park (0/1), ids...
_SETTLE = (
    DONE_LUA
    + """
local ids = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if ARGV[2] == '1' then
    local seq = redis.call('zscore', KEYS[2], id)
    if seq then redis.call('zadd', KEYS[4], seq, id) end
    redis.call('zrem', KEYS[2], id)
  else
    ids[#ids + 1] = id
  end
end
inbox_done(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ids)
if redis.call('zcard', KEYS[2]) == 0 then redis.call('zrem', KEYS[3], ARGV[1]) end
return 1
"""
)

# KEYS: hash, order, quarantine name; ARGV: id, raw. A damaged item, moved aside.
_QUARANTINE = """
redis.call('set', KEYS[3], ARGV[2])
redis.call('zrem', KEYS[2], ARGV[1])
local id = ARGV[1]
redis.call('hdel', KEYS[1], 'i:' .. id, 'o:' .. id, 't:' .. id, 'a:' .. id, 'm:' .. id)
return 1
"""


class RedisInbox:
    """`Inbox` for `RedisStore`; `lease_s` is how long an owner is alive without a heartbeat."""

    def __init__(self, client: aioredis.Redis, prefix: str, url: str, lease_s: float, owner: str) -> None:
        self._r = client
        self.prefix = prefix
        self.url = url
        self.lease_s = lease_s
        self.owner = owner
        self.renew_every_s = lease_s / 4
        """Several renewals per lease: one late (a busy loop) never lets it lapse."""
        self._append = client.register_script(_APPEND)
        self._adopt = client.register_script(_ADOPT)
        self._note = client.register_script(_NOTE)
        self._settle = client.register_script(_SETTLE)
        self._quarantine = client.register_script(_QUARANTINE)
        self._beat_at = 0.0
        self._held_until = 0.0
        """Monotonic time until which the lease is surely held (0: never held yet)."""
        self._lapsed = False

    def names(self, key: str) -> tuple[str, str, str]:
        """(hash, order, index) of `key`'s inbox: what the commit script needs."""
        d = digest(key)
        return f"{self.prefix}:inbox:{d}", f"{self.prefix}:inbox-order:{d}", f"{self.prefix}:inbox-keys"

    def _parked_name(self, key: str) -> str:
        return f"{self.prefix}:inbox-parked:{digest(key)}"

    async def heartbeat(self) -> None:
        sent = time.monotonic()  # the lease runs from when the renewal was sent, at the latest
        with redis_errors(self.url, "owner lease"):
            before = await self._r.set(
                f"{self.prefix}:alive:{self.owner}", b"1", px=max(1, int(self.lease_s * 1000)), get=True
            )
        if before is None and self._held_until and not self._lapsed:
            self._lapse("a renewal found it expired")
        self._beat_at = sent
        self._held_until = sent + self.lease_s * LEASE_SAFE

    def lease_held(self) -> bool:
        if self._held_until and not self._lapsed and time.monotonic() > self._held_until:
            self._lapse(f"not renewed for {self.lease_s * LEASE_SAFE:g} s")
        return not self._lapsed

    def forget_lapse(self) -> None:
        if self._lapsed and time.monotonic() < self._held_until:
            self._lapsed = False

    def _lapse(self, why: str) -> None:
        self._lapsed = True
        log.warning("inbox: the owner lease of this process may have lapsed (%s); giving up its items", why)

    async def owned(self, key: SessionKey, item_ids: Sequence[str]) -> bool:
        if not item_ids:
            return True
        hash_, _, _ = self.names(key)
        with redis_errors(self.url, "inbox owner"):
            owners = await cast("Any", self._r.hmget(hash_, [f"o:{i}" for i in item_ids]))
        return all(o is not None and o.decode() == self.owner for o in owners)

    async def _alive(self) -> None:
        """Renew the lease when a third of it passed since the last heartbeat."""
        if time.monotonic() - self._beat_at > self.lease_s / 3:
            await self.heartbeat()

    async def append(self, item: InboxItem) -> InboxItem:
        await self._alive()
        hash_, order, index = self.names(item.key)
        body = json.dumps(item.to_json(), ensure_ascii=False, separators=(",", ":"))
        with redis_errors(self.url, "inbox append"):
            seq = await self._append(
                keys=[hash_, order, f"{self.prefix}:inbox-seq:{digest(item.key)}", index],
                args=[item.item_id, body, self.owner, item.key, item.at],
            )
        return replace(item, owner=self.owner, seq=int(seq))

    async def keys(self) -> list[SessionKey]:
        with redis_errors(self.url, "inbox index"):
            raw = await self._r.zrange(f"{self.prefix}:inbox-keys", 0, -1)
        out: list[SessionKey] = []
        for name in raw:
            try:
                out.append(validate_key(name.decode()))
            except (ValueError, UnicodeDecodeError):
                log.error("inbox index holds a malformed key %r; skipped", name[:80])
        return out

    async def items(self, key: SessionKey) -> InboxView:
        hash_, order, _ = self.names(key)
        with redis_errors(self.url, "inbox read"):
            pending = await self._r.zrange(order, 0, -1, withscores=True)
            parked = await self._r.zrange(self._parked_name(key), 0, -1, withscores=True)
            fields = await cast("Any", self._r.hgetall(hash_))
        bad = 0
        out: list[InboxItem] = []
        for id_raw, seq in pending:
            item_id = id_raw.decode()
            raw = fields.get(b"i:" + id_raw)
            try:
                item = InboxItem.from_json(json.loads(raw)) if raw is not None else None
                if item is None:
                    raise ValueError("the item is missing")
            except (ValueError, UnicodeDecodeError) as exc:
                bad += 1
                await self._move_aside(key, item_id, raw or b"", str(exc))
                continue
            tries = fields.get(b"t:" + id_raw)
            owner = fields.get(b"o:" + id_raw, b"")
            out.append(
                _with(
                    item,
                    int(seq),
                    owner.decode(),
                    int(tries) if tries else 0,
                    _answers(fields.get(b"m:" + id_raw), fields.get(b"a:" + id_raw)),
                )
            )
        kept: list[InboxItem] = []
        for id_raw, seq in parked:
            raw = fields.get(b"i:" + id_raw)
            if raw is not None:
                try:
                    kept.append(_with(InboxItem.from_json(json.loads(raw)), int(seq), "", 0, ()))
                except (ValueError, UnicodeDecodeError):
                    continue
        return InboxView(out, kept, bad)

    async def _move_aside(self, key: SessionKey, item_id: str, raw: bytes, why: str) -> None:
        hash_, order, _ = self.names(key)
        moved = f"{self.prefix}:quarantine:inbox:{digest(key)}:{time.time_ns()}"
        with redis_errors(self.url, "inbox quarantine"):
            await self._quarantine(keys=[hash_, order, moved], args=[item_id, raw])
        log.error("inbox of %s had a damaged item (%s); moved to %s, the rest is kept", key, why, moved)

    async def adopt(self, key: SessionKey, item_ids: Sequence[str]) -> list[str]:
        if not item_ids:
            return []
        await self._alive()
        hash_, order, _ = self.names(key)
        with redis_errors(self.url, "inbox adopt"):
            got = await self._adopt(
                keys=[hash_, order], args=[self.owner, f"{self.prefix}:alive:", *item_ids]
            )
        return [g.decode() if isinstance(g, bytes) else str(g) for g in got]

    async def note(
        self,
        key: SessionKey,
        item_id: str,
        *,
        answer_ids: Sequence[str] | None = None,
        attempt: bool = False,
    ) -> None:
        hash_, _, _ = self.names(key)
        ids = list(answer_ids) if answer_ids is not None else None
        args = [item_id, json.dumps(ids) if ids is not None else "", ids[0] if ids else ""]
        with redis_errors(self.url, "inbox note"):
            await self._note(keys=[hash_], args=[*args, "1" if attempt else "0"])

    async def settle(self, key: SessionKey, item_ids: Sequence[str], *, park: bool = False) -> None:
        if not item_ids:
            return
        hash_, order, index = self.names(key)
        with redis_errors(self.url, "inbox settle"):
            await self._settle(
                keys=[hash_, order, index, self._parked_name(key)],
                args=[key, "1" if park else "0", *item_ids],
            )

    async def release(self) -> None:
        """On a clean stop: end the lease at once, so other processes adopt without waiting."""
        with redis_errors(self.url, "owner lease"):
            await self._r.delete(f"{self.prefix}:alive:{self.owner}")


def _with(item: InboxItem, seq: int, owner: str, attempts: int, answer_ids: tuple[str, ...]) -> InboxItem:
    return replace(item, seq=seq, owner=owner, attempts=attempts, answer_ids=answer_ids)


def _answers(many: bytes | None, first: bytes | None) -> tuple[str, ...]:
    """An item's answer messages: the `m:` list, or (written by an older version) the one
    `a:` id. A damaged list: only the first message is known (logged)."""
    one = first.decode() if first else None
    try:
        return answer_ids_of(json.loads(many) if many is not None else None, one)
    except (ValueError, UnicodeDecodeError):
        log.error("inbox: an item's answer messages are unreadable; only the first is rewritten")
        return (one,) if one else ()
