"""One stop poller per process: carries a `/stop` taken by another process to the turn
running here.

A `/stop` taken elsewhere advances the key's stop counter in the store
(`Signals.request_stop`). Every running turn registers its key with the counter it read
under its turn lock (its baseline); one task reads the counters of all the registered
keys in one batch (`stop_requests_many`: a few stats, or one Redis round trip) and stops
each turn whose counter changed. One task per process rather than one per turn: with
thousands of turns waiting on a slow model, a task and a store read per turn every
`stop_poll_s` was a third of a core (docs/performance.md, waiting section).

Timing kept from the per-turn watch: a key is read at most `interval` after its turn
began (or after its last read), so a stop lands within one interval plus a read. Keys
due within the next half interval are read with them, so the store sees at most two
batches per interval, and a turn shorter than half an interval costs no read beyond its
baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.model import SessionKey, StoreError

log = logging.getLogger("chatlane.gateway")


class StopCounters(Protocol):
    """The part of the store the poller reads (`core.store.base.Signals`)."""

    async def stop_requests(self, key: SessionKey) -> int: ...

    async def stop_requests_many(self, keys: Sequence[SessionKey]) -> Mapping[SessionKey, int]: ...


@dataclass(slots=True, eq=False)
class _Watch:
    seen: int
    """The counter when the turn began: any other value is a stop meant for it."""
    due: float
    """Loop time by which the key is read next."""


class StopPoller:
    """Registered turns and the one task that polls their stop counters."""

    def __init__(
        self,
        store: StopCounters,
        interval: Callable[[], float],
        stop: Callable[[SessionKey], bool],
    ) -> None:
        self._store = store
        self._interval = interval
        self._stop = stop
        self._watched: dict[SessionKey, _Watch] = {}
        """In the order they fall due: a registration or a read puts a key at the end."""
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        """Starts the poller when the first key falls due: most turns end before that,
        and a timer costs less to make and cancel per turn than a task."""
        self._reading = False
        self.batches = 0
        """Batch reads made so far (what the tests and the bench count)."""

    @property
    def watched(self) -> int:
        """Turns registered now."""
        return len(self._watched)

    @property
    def polling(self) -> bool:
        """Whether the poller task or its starting timer exists (only while some turn is
        registered)."""
        return self._task is not None or self._timer is not None

    @contextlib.asynccontextmanager
    async def watch(self, key: SessionKey) -> AsyncIterator[None]:
        """Stop `key`'s turn if its counter changes while the block runs. Entered under
        the turn lock, so a stop meant for another process's turn of the key (which that
        process acts on) is already in the baseline."""
        try:
            seen = await self._store.stop_requests(key)
        except StoreError as exc:
            log.warning("turn of %s cannot be stopped from other processes: %s", key, exc)
            yield
            return
        loop = asyncio.get_running_loop()
        mine = _Watch(seen, loop.time() + self._interval())
        self._watched.pop(key, None)  # one turn per key here; keep the due order
        self._watched[key] = mine
        if self._task is None and self._timer is None:
            self._timer = loop.call_at(mine.due, self._start)
        try:
            yield
        finally:
            if self._watched.get(key) is mine:
                del self._watched[key]
            if not self._watched:
                # Nothing left to poll: a sleeping poller goes now, not an interval later
                # (and not after the loop closed at shutdown).
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if self._task is not None and not self._reading:
                    self._task.cancel()
                    self._task = None

    def _start(self) -> None:
        self._timer = None
        if self._watched and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="stop poller")

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._watched:
                wait = next(iter(self._watched.values())).due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # the first may have ended meanwhile: look again
                await self._read_due(loop.time())
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _read_due(self, now: float) -> None:
        interval = self._interval()
        limit = now + interval / 2
        due: list[tuple[SessionKey, _Watch]] = []
        for key, w in self._watched.items():
            if w.due > limit:
                break
            due.append((key, w))
        for key, w in due:
            del self._watched[key]
            w.due = now + interval
            self._watched[key] = w
        self._reading = True
        try:
            counts = await self._store.stop_requests_many([key for key, _ in due])
        except StoreError as exc:
            log.warning("stop flags of %d running turns unreadable: %s", len(due), exc)
            return
        except Exception:
            log.exception("the stop poller failed; it tries again in %s s", interval)
            return
        finally:
            self._reading = False
            self.batches += 1
        for key, w in due:
            # "Changed", not "grew": a Redis counter may expire and start again.
            if counts.get(key, 0) != w.seen and self._watched.get(key) is w and self._stop(key):
                del self._watched[key]
                log.info("turn of %s stopped on a request from another process", key)
