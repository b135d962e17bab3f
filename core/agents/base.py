"""The agent contract: what an agent is given for a turn (`TurnInput`) and what it does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.model import ChatMessage, SessionKey


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

    def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        """Yield the answer in pieces; raise `AgentError` when it cannot answer."""
        ...

    async def close(self) -> None: ...


class Summarizer(Protocol):
    """Optional for an agent: what compaction asks to summarise the older part of a history."""

    async def summarize(self, records: Sequence[ChatMessage]) -> str: ...
