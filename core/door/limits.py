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

from core.config import LimitsSettings
from core.model import Inbound, Reply, Responder, SessionKey, StoreError
from core.ops import Metrics
from core.store import SenderLimits

log = logging.getLogger("chatlane.limits")

SLOW_DOWN_TEXT = (
    "You're sending messages faster than I can answer. Please slow down and try again in a little while."
)


class Limits:
    """The gateway's limit check; a no-op when `[limits]` sets none."""

    def __init__(self, settings: LimitsSettings, store: SenderLimits, metrics: Metrics) -> None:
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
