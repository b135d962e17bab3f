"""Test agents and responders: doubles at the agent boundary, never of our code under test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from core.agents.echo import EchoAgent
from core.responders import FutureResponder, QuietResponder
from core.types import AgentError, Reply, TurnInput


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


__all__ = ["FixedAgent", "FutureResponder", "Inbox", "RecordingAgent", "SlowStreamAgent"]


class SlowStreamAgent:
    """Streams a known answer in `pieces` pieces, `gap_s` apart (a model that types).

    `text_for(turn)` is the whole answer of a turn, so a test can compare what a
    platform ended up showing with the exact non-streamed reply. `fail_after` pieces
    makes it raise `AgentError` mid-answer; `streaming` is set once the first piece is out.
    """

    name = "slow-stream"

    def __init__(
        self, pieces: int = 60, gap_s: float = 0.03, *, body: str = "", fail_after: int | None = None
    ) -> None:
        self.pieces = pieces
        self.gap_s = gap_s
        self.body = body
        self.fail_after = fail_after
        self.streaming = asyncio.Event()
        self.turns: list[TurnInput] = []

    def text_for(self, turn: int, said: str) -> str:
        """The answer to `said` in turn `turn`."""
        head = f"Answer {turn} to {said!r}: "
        return head + (self.body or " ".join(f"word{i}" for i in range(200)))

    def split(self, text: str) -> list[str]:
        size = -(-len(text) // self.pieces)
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        self.turns.append(turn)
        said = " + ".join(m.content for m in turn.new_messages)
        for i, piece in enumerate(self.split(self.text_for(turn.turn, said))):
            if self.fail_after is not None and i == self.fail_after:
                raise AgentError("the model went away (secret detail)")
            if i:
                await asyncio.sleep(self.gap_s)
            yield piece
            self.streaming.set()

    async def close(self) -> None:
        return None
