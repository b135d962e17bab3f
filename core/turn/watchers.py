"""Who watches turns run in this process: the operator console's live view and its turn
chart. The runner tells `TurnWatchers` when an answer starts, grows and ends; watchers
subscribe per key and get those events on a bounded queue.

Guarantees: notifying never blocks and never fails the turn (a full queue drops the
watcher's oldest event and marks it `lagged`); it costs one dict lookup per piece when
nobody watches. Only turns run by THIS process are seen (another replica's turn is not).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from core.model import SessionKey

WATCH_QUEUE = 1000
"""Events a slow watcher may fall behind by before its oldest are dropped."""
RECENT_TURNS = 20_000
"""Finished turns remembered for the turn chart (an hour of a busy bot, at ~5/s)."""

EventKind = Literal["start", "delta", "end", "outcome"]


@dataclass(frozen=True, slots=True)
class TurnEvent:
    kind: EventKind
    text: str = ""
    """The piece (delta) or the turn's outcome (outcome: answered, stopped, ...)."""


@dataclass(frozen=True, slots=True)
class FinishedTurn:
    at: float
    """Wall clock (time.time) when it ended."""
    latency_s: float
    outcome: str


class Watch:
    """One subscription: `events` to read; `lagged` once events had to be dropped."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[TurnEvent] = asyncio.Queue(WATCH_QUEUE)
        self.lagged = False

    def put(self, event: TurnEvent) -> None:
        if self.events.full():
            self.events.get_nowait()
            self.lagged = True
        self.events.put_nowait(event)


class TurnWatchers:
    def __init__(self) -> None:
        self._watches: dict[SessionKey, set[Watch]] = {}
        self.running: dict[SessionKey, float] = {}
        """Keys whose agent is answering here, with when it started (time.time)."""
        self.answer: dict[SessionKey, str] = {}
        """The answer so far of each running turn, so a watcher that joins late sees it."""
        self.recent: deque[FinishedTurn] = deque(maxlen=RECENT_TURNS)

    def watch(self, key: SessionKey) -> Watch:
        w = Watch()
        self._watches.setdefault(key, set()).add(w)
        return w

    def unwatch(self, key: SessionKey, w: Watch) -> None:
        watches = self._watches.get(key)
        if watches is not None:
            watches.discard(w)
            if not watches:
                del self._watches[key]

    def started(self, key: SessionKey) -> None:
        self.running[key] = time.time()
        self.answer[key] = ""
        self._tell(key, TurnEvent("start"))

    def delta(self, key: SessionKey, text: str) -> None:
        if key in self.answer:
            self.answer[key] += text
        self._tell(key, TurnEvent("delta", text))

    def ended(self, key: SessionKey) -> None:
        """The agent stopped producing (answered, stopped, failed): the live part is over."""
        self.running.pop(key, None)
        self.answer.pop(key, None)
        self._tell(key, TurnEvent("end"))

    def finished(self, key: SessionKey, outcome: str, latency_s: float) -> None:
        """The turn is over and answered (after `ended`, for turns that ran the agent)."""
        self.recent.append(FinishedTurn(time.time(), latency_s, outcome))
        self._tell(key, TurnEvent("outcome", outcome))

    def _tell(self, key: SessionKey, event: TurnEvent) -> None:
        for w in self._watches.get(key, ()):
            w.put(event)
