"""Test agents and responders: doubles at the agent boundary, never of our code under test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from core.agents.echo import EchoAgent
from core.responders import FutureResponder, QuietResponder
from core.types import AgentError, ChatMessage, Reply, TurnInput


class RecordingAgent:
    """Echo, but records every turn it was asked and can be held, slowed or made to fail."""

    name = "recording"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.turns: list[TurnInput] = []
        self.started = asyncio.Event()
        self.release: asyncio.Event | None = None
        self.fail_on: set[str] = set()
        self.running = 0
        self.most_running = 0
        self.summarized: list[list[ChatMessage]] = []
        self.fail_summaries = False
        self._echo = EchoAgent()

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        self.turns.append(turn)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.started.set()
        try:
            if self.release is not None:
                await self.release.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if any(m.content in self.fail_on for m in turn.new_messages):
                raise AgentError("upstream said no (secret detail)")
            async for piece in self._echo.stream(turn):
                yield piece
        finally:
            self.running -= 1

    async def summarize(self, records: Sequence[ChatMessage]) -> str:
        """The echo agent's deterministic summary; records what it was asked to summarise."""
        self.summarized.append(list(records))
        if self.fail_summaries:
            raise AgentError("the summary model is down")
        return await self._echo.summarize(records)

    async def close(self) -> None:
        return None


class FixedAgent:
    """Answers every turn with the same text (e.g. a long reply for chunking tests)."""

    name = "fixed"

    def __init__(self, text: str) -> None:
        self.text = text

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        yield self.text

    async def close(self) -> None:
        return None


class Inbox(QuietResponder):
    """Collects every reply and queued notice for one message."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.queued = 0
        self.done = asyncio.Event()

    async def send(self, reply: Reply) -> None:
        self.replies.append(reply)
        self.done.set()

    async def on_queued(self) -> None:
        self.queued += 1


__all__ = ["FixedAgent", "FutureResponder", "Inbox", "RecordingAgent"]
