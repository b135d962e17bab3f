"""Small `Responder` building blocks for adapters and tests."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator

from core.model import AgentEvent, AnswerNote, CancelReason, Reply


class QuietResponder(abc.ABC):
    """No typing indicator, no queued notice, no streaming: adapters override what they use."""

    @abc.abstractmethod
    async def send(self, reply: Reply) -> None: ...

    async def on_queued(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        yield

    async def on_delta(self, text: str) -> None:
        return None

    async def on_cancelled(self, reason: CancelReason) -> None:
        return None

    async def on_event(self, event: AgentEvent) -> None:
        return None

    def track_answer(self, note: AnswerNote) -> None:
        return None


class FutureResponder(QuietResponder):
    """Resolves a future with the first reply: for callers that wait for their answer
    (the HTTP API, the console, tests)."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.deltas: asyncio.Queue[str | None] | None = None
        self.updates: asyncio.Queue[str | AgentEvent | None] | None = None

    def stream_events(self) -> asyncio.Queue[str | AgentEvent | None]:
        """Like `stream`, with the agent's events (tool calls) between the pieces."""
        self.updates = asyncio.Queue()
        return self.updates

    def stream(self) -> asyncio.Queue[str | None]:
        """Receive the answer's pieces as they come; None marks the end."""
        self.deltas = asyncio.Queue()
        return self.deltas

    async def send(self, reply: Reply) -> None:
        if not self.reply.done():
            self.reply.set_result(reply)
        if self.deltas is not None:
            self.deltas.put_nowait(None)
        if self.updates is not None:
            self.updates.put_nowait(None)

    async def on_delta(self, text: str) -> None:
        if self.deltas is not None:
            self.deltas.put_nowait(text)
        if self.updates is not None:
            self.updates.put_nowait(text)

    async def on_event(self, event: AgentEvent) -> None:
        if self.updates is not None:
            self.updates.put_nowait(event)
