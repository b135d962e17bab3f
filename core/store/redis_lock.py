"""The Redis turn lock: turns of one key never overlap, across every host.

`SET NX PX` with a random token, renewed every third of its TTL by a task the lock
owns. A crashed host's lock expires after the TTL; a live turn's lock does not. If
renewal fails for a whole TTL (Redis unreachable, or the lock was taken from us), the
turn is cancelled and the lock raises `StoreError`, the way `asyncio.timeout` turns its
own cancellation into `TimeoutError`. Release is a token compare in Lua, so a late
release never frees someone else's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.types import SessionKey, StoreError

log = logging.getLogger("chatlane.store")

_LOCK_POLL_MAX_S = 0.05

# KEYS[1] lock, ARGV[1] token, ARGV[2] ttl in ms.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
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


@dataclass(slots=True)
class _Holding:
    """One held turn lock; `lost` is set by its keeper when the lock could not be kept."""

    key: SessionKey
    name: str
    token: str
    lost: bool = False


class TurnLocks:
    """Turn locks on one Redis client."""

    def __init__(self, client: aioredis.Redis, *, url: str, ttl_s: float) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self._r = client
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @contextlib.asynccontextmanager
    async def hold(self, key: SessionKey, name: str) -> AsyncIterator[None]:
        """Hold lock `name` for the turn of `key`; `StoreError` if it cannot be kept."""
        holding = _Holding(key, name, uuid.uuid4().hex)
        await self._acquire(holding)
        owner = asyncio.current_task()
        if owner is None:
            raise RuntimeError("lock_turn needs to run in an asyncio task")
        keeper = asyncio.create_task(self._keep(holding, owner), name=f"turn lock {key}")
        try:
            yield
        except asyncio.CancelledError:
            if holding.lost and owner.uncancel() == 0:
                raise StoreError(
                    f"Redis at {self.url}: lost the turn lock of {key}: not renewed "
                    f"within {self.ttl_s:g} s; the turn was stopped"
                ) from None
            raise
        finally:
            keeper.cancel()
            try:
                await asyncio.wait({keeper})
            finally:
                await asyncio.shield(self._let_go(holding))

    async def _acquire(self, holding: _Holding) -> None:
        delay = 0.002
        with redis_errors(self.url, "turn lock"):
            while True:
                attempt = asyncio.ensure_future(
                    self._r.set(holding.name, holding.token, nx=True, px=self._ttl_ms)
                )
                try:
                    won = await asyncio.shield(attempt)
                except asyncio.CancelledError:
                    # The request may already be in Redis and win the lock: wait for its
                    # answer and give the lock back, or the key would be stuck for a TTL.
                    await asyncio.shield(self._undo(attempt, holding))
                    raise
                if won:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _LOCK_POLL_MAX_S)

    async def _undo(self, attempt: asyncio.Future[Any], holding: _Holding) -> None:
        try:
            won = await attempt
        except (RedisError, OSError):
            return
        if won:
            await self._let_go(holding)

    async def _keep(self, holding: _Holding, owner: asyncio.Task[Any]) -> None:
        """Renew the lock every third of its TTL; cancel `owner` if it cannot be kept."""
        ttl = self.ttl_s
        kept_at = time.monotonic()
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                renewed = await self._renew(keys=[holding.name], args=[holding.token, self._ttl_ms])
            except (RedisError, OSError) as exc:
                if time.monotonic() - kept_at < ttl:
                    log.warning("could not renew the turn lock of %s yet: %s", holding.key, exc)
                    continue
                renewed = 0
            if renewed:
                kept_at = time.monotonic()
                continue
            holding.lost = True
            log.error("turn lock of %s lost (expired or taken); stopping the turn", holding.key)
            owner.cancel()
            return

    async def _let_go(self, holding: _Holding) -> None:
        # Tried even when the lock was lost: the token compare makes it harmless.
        try:
            await self._release(keys=[holding.name], args=[holding.token])
        except (RedisError, OSError) as exc:
            log.warning("could not release the turn lock of %s (it expires by itself): %s", holding.key, exc)
