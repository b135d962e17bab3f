"""The ONE way into core. Adapters call the `Gateway` (submit, command, stop, status);
conversation commands are defined once (`Command`, the `COMMANDS` registry); at the
door a message is checked against duplicates of its platform delivery (dedupe),
per-sender `[limits]`, and adapters gate it first (access). A message with a
`ReplyTarget` is stored in the durable inbox before `submit` returns; `resume` answers
pending inbox items after a restart through `targets` (adapters' factories).
"""

from __future__ import annotations

from core.door.access import Facts, Seen, admit
from core.door.commands import (
    COMMAND_WAIT_S,
    COMMANDS,
    NOT_HERE_TEXT,
    Answer,
    Command,
    Commands,
    describe_status,
)
from core.door.dedupe import Delivery, RecentSet, Requests
from core.door.gateway import Gateway
from core.door.limits import SLOW_DOWN_TEXT
from core.door.proactive import IdempotencyConflict, Mode, Proactive, Sent, Unreachable, target_for
from core.door.targets import Admits, NoAdapter, TargetResponder, Targets

__all__ = [
    "COMMANDS",
    "COMMAND_WAIT_S",
    "NOT_HERE_TEXT",
    "SLOW_DOWN_TEXT",
    "Admits",
    "Answer",
    "Command",
    "Commands",
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
    "describe_status",
    "target_for",
]
