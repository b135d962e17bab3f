"""Running one lane item: the `TurnRunner` (lease -> resolve -> context -> agent -> commit
-> deliver), what a turn reads besides its messages (context: backfill, attachments,
fetch), compaction, `/model`, and the adapter-side helpers that show a reply as it
grows (streaming, chunking, responders).
"""

from __future__ import annotations

from core.turn.attachments import BytesSource, UrlSource
from core.turn.chunking import split_message
from core.turn.fetch import Write, fetch_url, stream_url
from core.turn.inbox import POISON_TEXT
from core.turn.responders import FutureResponder, QuietResponder
from core.turn.runner import DEFAULT_MODEL_COMMAND, TurnRunner
from core.turn.streaming import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_WAITING,
    STATUS_WORKING,
    STOPPED_MARK,
    DraftStream,
    LiveAnswer,
    ToolStatus,
    status_after,
)
from core.turn.tools import (
    ALREADY_GONE_TEXT,
    APPROVAL_ACTION_PREFIX,
    APPROVAL_QUESTION_TEXT,
    APPROVE_LABEL,
    DENY_LABEL,
    NOT_YOURS_TEXT,
    approval_action,
    decision_text,
    parse_approval_action,
)
from core.turn.watchers import FinishedTurn, TurnEvent, TurnWatchers, Watch

__all__ = [
    "ALREADY_GONE_TEXT",
    "APPROVAL_ACTION_PREFIX",
    "APPROVAL_QUESTION_TEXT",
    "APPROVE_LABEL",
    "DEFAULT_MODEL_COMMAND",
    "DENY_LABEL",
    "NOT_YOURS_TEXT",
    "POISON_TEXT",
    "STATUS_DONE",
    "STATUS_FAILED",
    "STATUS_WAITING",
    "STATUS_WORKING",
    "STOPPED_MARK",
    "BytesSource",
    "DraftStream",
    "FinishedTurn",
    "FutureResponder",
    "LiveAnswer",
    "QuietResponder",
    "ToolStatus",
    "TurnEvent",
    "TurnRunner",
    "TurnWatchers",
    "UrlSource",
    "Watch",
    "Write",
    "approval_action",
    "decision_text",
    "fetch_url",
    "parse_approval_action",
    "split_message",
    "status_after",
    "stream_url",
]
