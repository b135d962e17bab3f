"""Test agents: doubles at the agent boundary (the model), never of chatlane's own code.

RecordingAgent  echo, but records every turn; can be held, slowed or made to fail
FixedAgent      the same answer to every turn
FlakyAgent      fails or is slow on a deterministic share of turns (load and fault tests)
SlowStreamAgent streams a known answer in many small pieces (a model that types)
Replies           a responder that collects every reply of one message
reported        the answer messages a responder reports to core (`track_answer`)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from core.agents import EchoAgent, TurnInput
from core.model import AgentError, AgentEvent, ApprovalWaiting, ChatMessage, Decision, Reply, Responder
from core.turn import QuietResponder


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


class FlakyAgent:
    """An agent boundary that fails or is slow on a deterministic share of turns.

    Whether a turn fails or is slow is drawn from a hash of its newest message, so a
    run is reproducible and a test can predict which replies must be failures.
    """

    name = "flaky"

    def __init__(
        self, fail: float = 0.0, slow: float = 0.0, slow_s: float = 0.05, delay_s: float = 0.0
    ) -> None:
        self.fail, self.slow, self.slow_s, self.delay_s = fail, slow, slow_s, delay_s
        self.calls = 0
        self.running = 0

    @staticmethod
    def draw(text: str, salt: str) -> float:
        digest = hashlib.blake2b(f"{salt}:{text}".encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") / 2**64

    def fails(self, text: str) -> bool:
        return self.draw(text, "fail") < self.fail

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        self.calls += 1
        self.running += 1
        try:
            said = turn.new_messages[-1].content
            wait = self.delay_s + (self.slow_s if self.draw(said, "slow") < self.slow else 0.0)
            if wait:
                await asyncio.sleep(wait)
            if self.fails(said):
                raise AgentError("upstream model returned 500 (fake)")
            yield f"ok: {said} (turn {turn.turn})"
        finally:
            self.running -= 1

    async def close(self) -> None:
        return None


class Replies(QuietResponder):
    """Collects every reply and queued notice for one message."""

    def __init__(self, *, decide: Decision | None = "denied") -> None:
        self.replies: list[Reply] = []
        self.queued = 0
        self.done = asyncio.Event()
        self.events: list[AgentEvent] = []
        self.decide = decide
        """What an approval gets here at once; None: wait for a click (`Gateway.decide_approval`)."""

    async def on_event(self, event: AgentEvent) -> None:
        self.events.append(event)

    async def ask_approval(self, waiting: ApprovalWaiting) -> Decision | None:
        return self.decide

    async def send(self, reply: Reply) -> None:
        self.replies.append(reply)
        self.done.set()

    async def on_queued(self) -> None:
        self.queued += 1


class SlowStreamAgent:
    """Streams a known answer in `pieces` pieces, `gap_s` apart (a model that types).

    `text_for(turn, said)` is the whole answer of a turn, so a test can compare what a
    platform ended up showing with the exact non-streamed reply. `fail_after` pieces
    makes it raise `AgentError` mid-answer; `stall_after` pieces makes it stop there and
    wait forever (a model that hangs: a process killed then was mid-answer); `words` is
    how many words the default answer has (200: about 1,700 characters);
    `streaming` is set once the first piece is out.
    """

    name = "slow-stream"

    def __init__(
        self,
        pieces: int = 60,
        gap_s: float = 0.03,
        *,
        body: str = "",
        fail_after: int | None = None,
        stall_after: int | None = None,
        words: int = 200,
    ) -> None:
        self.pieces = pieces
        self.gap_s = gap_s
        self.body = body
        self.fail_after = fail_after
        self.stall_after = stall_after
        self.words = words
        self.streaming = asyncio.Event()
        self.turns: list[TurnInput] = []

    def text_for(self, turn: int, said: str) -> str:
        """The answer to `said` (the turn's new messages joined by " + ") in turn `turn`."""
        head = f"Answer {turn} to {said!r}: "
        return head + (self.body or " ".join(f"word{i}" for i in range(self.words)))

    def split(self, text: str) -> list[str]:
        size = -(-len(text) // self.pieces)
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        self.turns.append(turn)
        said = " + ".join(m.content for m in turn.new_messages)
        for i, piece in enumerate(self.split(self.text_for(turn.turn, said))):
            if self.fail_after is not None and i == self.fail_after:
                raise AgentError("the model went away (secret detail)")
            if self.stall_after is not None and i == self.stall_after:
                await asyncio.Event().wait()
            if i:
                await asyncio.sleep(self.gap_s)
            yield piece
            self.streaming.set()

    async def close(self) -> None:
        return None


def slow_stream(options: Mapping[str, Any]) -> SlowStreamAgent:
    """A `SlowStreamAgent` for a `chatlane run` child process: `[agent] backend = "python"`,
    `factory = "bots.testing.agents:slow_stream"`, `options = {pieces = 30, gap_s = 0.05}`
    (and optionally `stall_after`, `words`)."""
    stall = options.get("stall_after")
    return SlowStreamAgent(
        int(options.get("pieces", 60)),
        float(options.get("gap_s", 0.03)),
        stall_after=int(stall) if stall is not None else None,
        words=int(options.get("words", 200)),
    )


def reported(responder: Responder) -> list[tuple[str, ...]]:
    """Every list of answer messages `responder` reports to core (`track_answer`), in order,
    as core's inbox would store them."""
    reports: list[tuple[str, ...]] = []

    async def note(ids: tuple[str, ...]) -> None:
        reports.append(ids)

    responder.track_answer(note)
    return reports
