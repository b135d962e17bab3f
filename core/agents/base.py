"""The agent contract: what an agent is given for a turn (`TurnInput`) and what it does.

`stream()` yields `str` pieces of the answer and, since protocol version 2, may also
yield the small events of core/model/events.py (`ToolStarted`, `ToolFinished`,
`ToolFailed`, ...): the turn shows them as one status line and stores tool calls as
records of the turn. An agent that yields only text works unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from core.model import (
    AgentEvent,
    ApprovalDecided,
    ApprovalWaiting,
    ChatMessage,
    Decision,
    SessionKey,
    ToolFailed,
    ToolFinished,
    ToolStarted,
    Usage,
)

__all__ = [
    "Agent",
    "AgentEvent",
    "ApprovalDecided",
    "ApprovalWaiting",
    "Decision",
    "Piece",
    "Summarizer",
    "ToolFailed",
    "ToolFinished",
    "ToolHost",
    "ToolOutcome",
    "ToolStarted",
    "TurnInput",
]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one tool call came to, as stored while the turn runs (so a resumed turn reuses
    it instead of running the tool again)."""

    decision: Decision | None
    """None: the tool needed no approval."""
    text: str
    """What the model is shown (already capped)."""
    error: bool = False


class ToolHost(Protocol):
    """What the turn offers an agent that calls tools: approvals by a person and the
    durable record of each call. Keys name a call within the turn (tool, arguments and
    how often the same call came before), so a resumed turn finds its earlier calls."""

    async def approve(self, call_key: str, tool: str, arguments: str) -> Decision:
        """Ask a person (buttons where the platform has them); waits until someone with
        the right decides or the timeout denies. Never raises for a platform failure."""
        ...

    async def recall(self, call_key: str) -> ToolOutcome | None:
        """The outcome stored by an earlier run of this turn, if any."""
        ...

    async def remember(self, call_key: str, outcome: ToolOutcome) -> None:
        """Store an outcome durably before the model sees it (a retried write stores once)."""
        ...

    async def remind(self, call_key: str, text: str, at: datetime) -> str:
        """A one-shot schedule in this conversation: `text` comes back as a prompt at `at`.
        Named after the call, so a resumed turn sets it once. `ValueError` when it cannot
        be set here (no scheduler, a conversation without a channel)."""
        ...


Piece = str | Usage | AgentEvent
"""What an agent's `stream` yields. `str`: the next piece of the answer's text (a
text-only agent yields nothing else). `Usage` (optional, any number, usually one at the
end): tokens the answer cost as the model reported them; the pieces of one turn add up,
and the HTTP API returns the sum as `usage`. An `AgentEvent` (protocol 2, optional): a
tool started / finished / failed, shown as the status line and stored as a record; a
consumer ignores what it does not know."""


@dataclass(frozen=True, slots=True)
class TurnInput:
    """What an agent sees for one turn."""

    session_key: SessionKey
    session_id: str
    turn: int
    history: Sequence[ChatMessage]
    new_messages: Sequence[ChatMessage]
    model: str | None = None
    """The model this conversation chose with `/model`; None: use the agent's default."""
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    """Bytes of the attachments in `history` and `new_messages`, by sha256, as far as the
    turn's budget allows; a reference without bytes here is shown as a placeholder."""
    tools: ToolHost | None = None
    """Approvals and durable tool records (None: run tools without either, e.g. in tests)."""


class Agent(Protocol):
    name: str

    def stream(self, turn: TurnInput) -> AsyncIterator[Piece]:
        """Yield the answer in pieces (text, and optionally its `Usage` and tool events:
        see `Piece`); raise `AgentError` when it cannot answer. An `AsyncIterator[str]`
        fits too."""
        ...

    async def close(self) -> None: ...


class Summarizer(Protocol):
    """Optional for an agent: what compaction asks to summarise the older part of a history."""

    async def summarize(self, records: Sequence[ChatMessage]) -> str: ...
