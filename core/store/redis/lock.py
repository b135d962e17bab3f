"""The Redis turn lock: turns of one key never overlap, across every host.

`SET NX PX` with a random token, and in the same script an `INCR` of the key's fencing
counter: the lease's fencing token, which the commit script checks. The lock is renewed
every third of its TTL by a task the lock owns. A crashed host's lock expires after the
TTL; a live turn's lock does not.

A lease knows its own deadline: it runs out one TTL after the last renewal that was
*sent* and succeeded. Every lock command waits at most until then (a stalled socket
never raises by itself), so when the deadline passes without a renewal the lease is
lost at that moment: the turn is cancelled (it stops calling the model for nothing) and
the lock raises `Fenced`, the way `asyncio.timeout` turns its own cancellation into
`TimeoutError`. Once the turn's commit is under way a lost lease no longer cancels it:
the fence decides. A paused process (GC, SIGSTOP) that resumes past its deadline may
still try to commit; the fence refuses it. Release is a token compare in Lua, so a late
release never frees someone else's lock.

A lost reply (redis-py sends the command again): the acquire script recognises a lock
that holds the holder's own token as taken by that holder; renew and release are token
compares, the same when sent twice.

Round trips (issue 28): the acquire script also reads what the turn reads first (the
entry, the last commits of its session, the key's stop counter), the store's commit
script lets go of the lock when it stores the turn (`let_go_in_commit`), and the
renewal task is only started once a turn outlives a third of the TTL. A short turn so
costs two round trips of lock and commit, and no task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.model import Fenced, SessionKey, StoreError, TurnLease
from core.ops import cancel_and_wait

log = logging.getLogger("chatlane.store")

_LOCK_POLL_MAX_S = 0.05

# KEYS[1] lock, ARGV[1] token, ARGV[2] ttl in ms.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] lock, KEYS[2] fencing counter, KEYS[3] the entry, KEYS[4] the stop counter;
# ARGV[1] token, ARGV[2] ttl in ms, ARGV[3] transcript name prefix, ARGV[4] how many of
# the last commits to read, ARGV[5] how the session's last commit begins if the caller
# still has the commits (core/store/redis/warm.py; '' if not). Returns {0} when the lock
# is held, else {token, stop counter or false, entry or false, 'warm' (the caller's
# commits are current: none sent) or 'read', last commits...}: the turn's reads come
# with its lock, in one round trip. pcall: a damaged value must not
# abort the script after the lock was taken. A lock that already holds ARGV[1] is this
# holder's own (an attempt whose reply was lost, or that timed out after reaching Redis):
# it is taken with the fencing token that attempt drew (nobody else can have drawn one
# while the lock was held).
_ACQUIRE = """
local out
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  out = {redis.call('incr', KEYS[2])}
elseif redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  out = {tonumber(redis.call('get', KEYS[2]))}
else
  return {0}
end
local stop = redis.pcall('get', KEYS[4])
out[2] = type(stop) == 'string' and stop or false
local raw = redis.pcall('get', KEYS[3])
if type(raw) ~= 'string' then
  out[3] = false
  return out
end
out[3] = raw
local n = tonumber(ARGV[4])
local ok, obj = pcall(cjson.decode, raw)
if n > 0 and ok and type(obj) == 'table' and type(obj.sessionId) == 'string'
    and string.match(obj.sessionId, '^[0-9a-f]+$') and #obj.sessionId == 32 then
  local name = ARGV[3] .. obj.sessionId
  if ARGV[5] ~= '' then
    local newest = redis.pcall('lindex', name, -1)
    if type(newest) == 'string' and string.sub(newest, 1, #ARGV[5]) == ARGV[5] then
      out[4] = 'warm'
      return out
    end
  end
  out[4] = 'read'
  local last = redis.pcall('lrange', name, -n, -1)
  if type(last) == 'table' and not last.err then
    for i = 1, #last do out[i + 4] = last[i] end
  end
end
return out
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@contextlib.contextmanager
def redis_errors(url: str, what: str) -> Iterator[None]:
    """Any Redis or socket error inside becomes a `StoreError` naming `url` (no password)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreError(f"Redis at {url}: {what} failed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class TurnReads:
    """What the lock's script read as it took the lock: the entry (None if there is none or
    it could not be read) and up to `asked` last commits of its session, oldest first."""

    entry: bytes | None
    commits: list[bytes]
    asked: int
    stop: int = 0
    """The key's stop counter as the lock was taken (0 if none or unreadable)."""
    warm: bool = False
    """The caller's kept commits are current (`commits` is empty: the script sent none)."""


@dataclass(slots=True)
class _Holding:
    """One held turn lock; `lost` is set by its keeper when the lock could not be kept."""

    key: SessionKey
    name: str
    fence: str
    token: str
    lease: TurnLease | None = None
    entry: str = ""
    """The key's entry, read with the lock (see `TurnReads`)."""
    transcripts: str = ""
    tail: int = 0
    stop: str = ""
    """The key's stop counter, read with the lock."""
    expect: bytes = b""
    """How the session's last commit begins if the caller still has its commits."""
    reads: TurnReads | None = None
    deadline: float = 0.0
    """monotonic time at which the lock expires unless renewed before."""
    lost: bool = False
    released: bool = False
    """Let go of by the turn's commit (its script deleted the lock): nothing to renew or release."""


class TurnLocks:
    """Turn locks on one Redis client."""

    def __init__(self, client: aioredis.Redis, *, url: str, ttl_s: float) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self._r = client
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._acquire_script = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._held: dict[tuple[str, int], _Holding] = {}
        """(key, fencing token) -> the lock held for that lease, while its block runs."""

    @contextlib.asynccontextmanager
    async def hold(
        self,
        key: SessionKey,
        name: str,
        fence: str,
        *,
        reads: tuple[str, str, int, str, bytes],
        on_reads: Callable[[TurnReads], None],
    ) -> AsyncIterator[TurnLease]:
        """Hold lock `name` for the turn of `key`, raising counter `fence`; `Fenced` out of
        the block if the lease runs out before the turn's commit began. `reads` is (entry
        name, transcript name prefix, commits to read, stop counter name, the kept last
        commit's prefix or b''): what was read with the lock goes to `on_reads` before
        the block runs.

        The renewal task starts only when the turn outlives a third of the TTL (a timer
        until then): most turns end sooner, and a task per turn is CPU on the hot path."""
        holding = _Holding(key, name, fence, uuid.uuid4().hex)
        holding.entry, holding.transcripts, holding.tail, holding.stop, holding.expect = reads
        lease = await self._acquire(holding)
        if holding.reads is not None:
            on_reads(holding.reads)
        owner = asyncio.current_task()
        if owner is None:
            raise RuntimeError("lock_turn needs to run in an asyncio task")
        keeper: asyncio.Task[None] | None = None

        def keep() -> None:
            nonlocal keeper
            keeper = asyncio.create_task(self._keep(holding, owner), name=f"turn lock {key}")

        timer = asyncio.get_running_loop().call_later(self.ttl_s / 3, keep)
        self._held[(key, lease.token)] = holding
        try:
            yield lease
        except asyncio.CancelledError:
            if holding.lost and owner.uncancel() == 0:
                raise Fenced(
                    f"lost the turn lock of {key}: not renewed within {self.ttl_s:g} s; the turn was stopped"
                ) from None
            raise
        finally:
            del self._held[(key, lease.token)]
            timer.cancel()
            try:
                if keeper is not None:
                    await cancel_and_wait({keeper})  # its cancel can be lost in redis-py
            finally:
                if not holding.released:
                    await asyncio.shield(self._let_go(holding))

    def let_go_in_commit(self, lease: TurnLease) -> tuple[str, str] | None:
        """(lock name, lock token) of the held lock `lease` came from, for a commit script
        that deletes the lock when it stores the turn (a token compare, as `_RELEASE`);
        None if this process does not hold it."""
        holding = self._held.get((lease.key, lease.token))
        return None if holding is None else (holding.name, holding.token)

    def released(self, lease: TurnLease) -> None:
        """The commit let go of `lease`'s lock: the block's end sends no release, and the
        renewal stops (a later commit under this lease still meets the fence)."""
        holding = self._held.get((lease.key, lease.token))
        if holding is not None:
            holding.released = True

    async def _acquire(self, holding: _Holding) -> TurnLease:
        delay = 0.002
        with redis_errors(self.url, "turn lock"):
            while True:
                sent = time.monotonic()
                attempt = asyncio.ensure_future(self._try(holding))
                try:
                    token = await asyncio.shield(attempt)
                except asyncio.CancelledError:
                    # The request may already be in Redis and win the lock: wait for its
                    # answer and give the lock back, or the key would be stuck for a TTL.
                    await asyncio.shield(self._undo(attempt, holding))
                    raise
                if token:
                    holding.deadline = sent + self.ttl_s
                    holding.lease = TurnLease(holding.key, token)
                    return holding.lease
                await asyncio.sleep(delay)
                delay = min(delay * 2, _LOCK_POLL_MAX_S)

    async def _try(self, holding: _Holding) -> int:
        """One attempt, bounded: a stalled connection must not hold the waiter forever.
        The fencing token, or 0 if the lock is held (or the attempt timed out)."""
        try:
            async with asyncio.timeout(self.ttl_s / 2):
                won = await self._acquire_script(
                    keys=[holding.name, holding.fence, holding.entry, holding.stop],
                    args=[holding.token, self._ttl_ms, holding.transcripts, holding.tail, holding.expect],
                )
        except TimeoutError:
            # If it did reach Redis, the next attempt finds the lock holding this
            # holder's token and takes it (the script); else it expires after one TTL.
            log.warning("taking the turn lock of %s timed out; trying again", holding.key)
            return 0
        token = int(won[0])
        if token:
            stop = won[1] if len(won) > 1 and isinstance(won[1], bytes) else b""
            entry = won[2] if len(won) > 2 and isinstance(won[2], bytes) else None
            warm = len(won) > 3 and won[3] == b"warm"
            stopped = int(stop) if stop.isdigit() else 0
            holding.reads = TurnReads(entry, list(won[4:]), holding.tail, stopped, warm)
        return token

    async def _undo(self, attempt: asyncio.Future[Any], holding: _Holding) -> None:
        try:
            won = await attempt
        except (RedisError, OSError):
            return
        if won:
            await self._let_go(holding)

    async def _keep(self, holding: _Holding, owner: asyncio.Task[Any]) -> None:
        """Renew the lock every third of its TTL; at the lease's deadline without a
        renewal, cancel `owner` (unless its commit is already under way). Started a
        third of the TTL after the lock was taken: renews at once, then every third."""
        while not holding.released:
            sent = time.monotonic()
            renewed = 0
            try:
                async with asyncio.timeout(max(0.0, holding.deadline - sent)):
                    renewed = await self._renew(keys=[holding.name], args=[holding.token, self._ttl_ms])
            except TimeoutError:
                pass  # the deadline passed while waiting: lost below
            except (RedisError, OSError) as exc:
                if time.monotonic() < holding.deadline:
                    log.warning("could not renew the turn lock of %s yet: %s", holding.key, exc)
                    await asyncio.sleep(self.ttl_s / 3)
                    continue
            if renewed:
                holding.deadline = sent + self.ttl_s
                await asyncio.sleep(self.ttl_s / 3)
                continue
            if holding.released:
                return  # the commit let go of it meanwhile
            # Not renewed by the deadline, or the lock is gone (expired, taken, flushed).
            holding.lost = True
            if holding.lease is not None and holding.lease.committing:
                log.warning(
                    "turn lock of %s lost while its commit is under way; the fence decides", holding.key
                )
                return
            log.warning(
                "turn lock of %s lost (not renewed in time, or taken); stopping the turn", holding.key
            )
            owner.cancel()
            return

    async def _let_go(self, holding: _Holding) -> None:
        # Tried even when the lock was lost: the token compare makes it harmless.
        try:
            await self._release(keys=[holding.name], args=[holding.token])
        except (RedisError, OSError) as exc:
            log.warning("could not release the turn lock of %s (it expires by itself): %s", holding.key, exc)
