"""The agent contract: what an agent is given for a turn (`TurnInput`) and what it does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.model import ChatMessage, SessionKey, Usage

Piece = str | Usage
"""What an agent's `stream` yields. `str`: the next piece of the answer's text (a
text-only agent yields nothing else). `Usage` (optional, any number, usually one at the
end): tokens the answer cost as the model reported them; the pieces of one turn add up,
and the HTTP API returns the sum as `usage`. Other kinds of events may join this union
later (tool calls); a consumer ignores what it does not know."""


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


class Agent(Protocol):
    name: str

    def stream(self, turn: TurnInput) -> AsyncIterator[Piece]:
        """Yield the answer in pieces (text, and optionally its `Usage`: see `Piece`);
        raise `AgentError` when it cannot answer. An `AsyncIterator[str]` fits too."""
        ...

    async def close(self) -> None: ...


class Summarizer(Protocol):
    """Optional for an agent: what compaction asks to summarise the older part of a history."""

    async def summarize(self, records: Sequence[ChatMessage]) -> str: ...
