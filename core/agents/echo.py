"""The offline default agent: deterministic, and it shows whether memory was kept.

Its reply starts with `echo: <what you said>` and names the turn number of this session
and the earliest thing it remembers you saying, so a person (and a test) sees at once
that a follow-up landed in the same session. Files show as what it received
("[image: cat.png 640x480]", "[file: log.txt, 1,204 lines]"), and a first turn says how
many earlier messages of the thread it was given.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from core.agents.base import TurnInput
from core.agents.showing import placeholder
from core.model import ChatMessage

SUMMARY_LIMIT = 600


class EchoAgent:
    name = "echo"
    reads_attachments = False
    """It names files from their references; the gateway need not read their bytes back."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        said = " / ".join(_shown(m) for m in turn.new_messages if m.role == "user")
        earlier = [m.content for m in turn.history if m.role == "user" and not m.backfill]
        first = earlier[0] if earlier else said
        yield f"echo: {said}"
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        summary = next((m.content for m in turn.history if m.summary), None)
        if summary is not None:
            remembered = f"from the summary: {_clip(summary)!r}"
        else:
            remembered = f"first thing I remember you saying: {_clip(first)!r}" if earlier else "new session"
        backfilled = sum(1 for m in turn.history if m.backfill)
        read = f"; read {backfilled} earlier messages of the thread" if backfilled and turn.turn == 1 else ""
        model = f"; model {turn.model}" if turn.model else ""
        yield f"\n(turn {turn.turn} of session {turn.session_id[:8]}; {remembered}{read}{model})"

    async def summarize(self, records: Sequence[ChatMessage]) -> str:
        """Deterministic: an earlier summary, then what the person said, clipped."""
        parts = [m.content for m in records if m.summary]
        said = [_clip(m.content, 40) for m in records if m.role == "user" and not m.summary]
        if said:
            parts.append("you said: " + " / ".join(said))
        return _clip("; ".join(parts), SUMMARY_LIMIT)

    async def close(self) -> None:
        return None


def _shown(m: ChatMessage) -> str:
    return " ".join([m.content, *(placeholder(a) for a in m.attachments)]).strip()


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
