"""Resolve a session key to its session, minting one at most once per key.

The bug this module exists to prevent: two concurrent requests both find no fresh
entry, both mint, and the second one runs without memory. `resolve` reads without a
lock on the hot path; only when the entry is missing or stale does it take the key's
in-process lock and call the store's `reserve`, which re-reads under a cross-process
lock and mints only if the entry is still missing or stale. Concurrent callers adopt
one session id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from core.config import ResetSettings
from core.model import SessionEntry, SessionKey
from core.store import Sessions


@dataclass(frozen=True, slots=True)
class Freshness:
    """When a session goes stale (config `session.reset`)."""

    mode: str = "none"
    idle_minutes: int = 0
    at_hour: int = 4

    @classmethod
    def from_settings(cls, s: ResetSettings) -> Freshness:
        return cls(s.mode, s.idle_minutes, s.at_hour)

    def is_fresh(self, entry: SessionEntry, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        idle_limit = self.idle_minutes * 60 if self.mode in ("idle", "daily") else 0
        if idle_limit and now - entry.last_interaction_at > idle_limit:
            return False
        if self.mode == "daily":
            return now < self.next_daily_boundary(entry.session_started_at)
        return True

    def next_daily_boundary(self, started_at: float) -> float:
        """The first local `at_hour:00` strictly after `started_at`."""
        start = datetime.fromtimestamp(started_at).astimezone()
        boundary = start.replace(hour=self.at_hour, minute=0, second=0, microsecond=0)
        if boundary <= start:
            boundary += timedelta(days=1)
        return boundary.timestamp()


def new_session_id() -> str:
    """32 lowercase hex digits: safe as a file name, unguessable as a handle."""
    return uuid.uuid4().hex


class KeyLocks:
    """One asyncio.Lock per key, forgotten when no task holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class Reserver:
    """Maps keys to sessions. Safe for any number of concurrent tasks and processes."""

    def __init__(
        self,
        store: Sessions,
        freshness: Freshness | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.freshness = freshness or Freshness()
        self._clock = clock
        self._locks = KeyLocks()
        self.mints = 0
        self.adoptions = 0

    def mint(self, key: SessionKey) -> SessionEntry:
        now = self._clock()
        return SessionEntry(
            key=key,
            session_id=new_session_id(),
            platform=key.split(":")[2],
            created_at=now,
            session_started_at=now,
            last_interaction_at=now,
            updated_at=now,
        )

    def _is_fresh(self, entry: SessionEntry) -> bool:
        return self.freshness.is_fresh(entry, self._clock())

    async def resolve(self, key: SessionKey) -> tuple[SessionEntry, bool]:
        """The key's session and whether this call created it."""
        entry = await self.store.get(key)
        if entry is not None and self._is_fresh(entry):
            return entry, False
        async with self._locks.hold(key):
            entry, created = await self.store.reserve(key, self._is_fresh, self.mint)
        if created:
            self.mints += 1
        else:
            self.adoptions += 1
        return entry, created

    async def reset(self, key: SessionKey, *, model: str | None = None) -> SessionEntry:
        """A new session for `key` (for /new and /reset); racing resolves adopt it.
        `model`: the conversation's `/model` choice, carried into the new session."""

        def mint(k: SessionKey) -> SessionEntry:
            return replace(self.mint(k), model=model)

        async with self._locks.hold(key):
            entry = await self.store.reset(key, mint)
        self.mints += 1
        return entry

    @property
    def active_locks(self) -> int:
        return len(self._locks)
