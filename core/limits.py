"""Per-sender message limits (`[limits]`), counted in the store so N replicas give one budget.

Two fixed windows per sender, a minute and a day, each starting at the sender's first
message after the previous window ended (so a burst is never split by a clock boundary
and given twice the budget). A message over a limit is not stored and not counted; the
first one of a window gets `SLOW_DOWN_TEXT`, the others nothing, so a flood is not
answered with a flood. The store does the counting atomically (files: a small
per-sender file under flock; Redis: one Lua script).
"""

from __future__ import annotations

import logging
from typing import Any

from core.config import LimitsSettings
from core.metrics import Metrics
from core.types import Admission, Inbound, Reply, Responder, SessionKey, SessionStore, StoreError

log = logging.getLogger("chatlane.limits")

SLOW_DOWN_TEXT = (
    "You're sending messages faster than I can answer. Please slow down and try again in a little while."
)
MINUTE_S = 60.0
DAY_S = 86_400.0


def count_in_windows(
    state: dict[str, Any], now: float, per_minute: int, per_day: int
) -> tuple[Admission, dict[str, Any]]:
    """The verdict on one more message and the sender's new state (pure; the files store
    runs it under the sender's lock). State: `{"m"|"d": [window start, count, told]}`."""
    windows = [
        (name, span, limit)
        for name, span, limit in (("m", MINUTE_S, per_minute), ("d", DAY_S, per_day))
        if limit > 0
    ]
    new: dict[str, Any] = {}
    for name, span, _ in windows:
        start, count, told = _window(state.get(name))
        new[name] = [start, count, told] if now - start < span else [now, 0, False]
    for name, _, limit in windows:
        if new[name][1] >= limit:
            if new[name][2]:
                return "limited", new
            new[name][2] = True
            return "limited_first", new
    for name, _, _ in windows:
        new[name][1] += 1
    return "allowed", new


def _window(raw: Any) -> tuple[float, int, bool]:
    try:
        start, count, told = raw
        return float(start), int(count), bool(told)
    except (TypeError, ValueError):
        return 0.0, 0, False


class Limits:
    """The gateway's limit check; a no-op when `[limits]` sets none."""

    def __init__(self, settings: LimitsSettings, store: SessionStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics

    @property
    def enabled(self) -> bool:
        return self.settings.per_minute > 0 or self.settings.per_day > 0

    async def admit(self, inbound: Inbound, key: SessionKey, responder: Responder) -> bool:
        """True if the message may go on; else the sender heard (at most) one notice.

        A store failure lets the message through: a limit is a courtesy, and the turn
        will report the store's trouble itself.
        """
        sender = f"{inbound.platform}:{inbound.sender or inbound.user}"
        try:
            verdict = await self.store.count_message(sender, self.settings.per_minute, self.settings.per_day)
        except StoreError as exc:
            log.warning("limits: cannot count a message of %s: %s; letting it through", sender, exc)
            return True
        if verdict == "allowed":
            return True
        self.metrics.rate_limited.labels(inbound.platform).inc()
        log.info("limits: %s is over its limit; message %s not answered", sender, inbound.message_id)
        text = SLOW_DOWN_TEXT if verdict == "limited_first" else ""
        await responder.send(Reply(text, "limited", key))
        return False
