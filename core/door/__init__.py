"""The ONE way into core. Adapters call the `Gateway` (submit, reset, stop, status,
choose_model); at the door a message is checked against duplicates of its platform
delivery (dedupe), per-sender `[limits]`, and adapters gate it first (access). A message
with a `ReplyTarget` is stored in the durable inbox before `submit` returns; `resume`
answers pending inbox items after a restart through `targets` (adapters' factories).
"""

from __future__ import annotations

from core.door.access import Facts, Seen, admit
from core.door.dedupe import Delivery, RecentSet, Requests
from core.door.gateway import Decided, Gateway
from core.door.limits import SLOW_DOWN_TEXT
from core.door.proactive import IdempotencyConflict, Mode, Proactive, Sent, Unreachable, target_for
from core.door.targets import NoAdapter, TargetResponder, Targets

__all__ = [
    "SLOW_DOWN_TEXT",
    "Decided",
    "Delivery",
    "Facts",
    "Gateway",
    "IdempotencyConflict",
    "Mode",
    "NoAdapter",
    "Proactive",
    "RecentSet",
    "Requests",
    "Seen",
    "Sent",
    "TargetResponder",
    "Targets",
    "Unreachable",
    "admit",
    "target_for",
]
