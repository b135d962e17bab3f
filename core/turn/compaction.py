"""Visible compaction: when a history outgrows its budget, summarise the older part.

A summary is one transcript record (`summary=True`, role "system") stored with the turn
that made it, in that turn's one commit. It stands for every record before it except the
last `keeps`, which are still sent word for word. The transcript itself keeps every
record; only what the agent is shown changes:

    transcript:  r1 r2 r3 r4 r5 r6 [S keeps=2] u7 a7 u8 a8
    agent sees:  S r5 r6 u7 a7 u8 a8

When to compact (agent setting `compact_after_tokens`, 0 = never): the estimated tokens
of history + new messages pass the budget, or the transcript window the gateway reads
(`history_limit` records) is about to lose the start of what must be sent (the summary
and its kept records), so nothing ever falls out silently. A summary that cannot be made
(the agent has no `summarize`, it fails or says nothing) falls back to trimming the
oldest records to fit the budget; it is logged, and the turn goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from core.agents import Agent
from core.config import AgentSettings
from core.model import ChatMessage

log = logging.getLogger("chatlane.compaction")

COMPACTED_NOTE = (
    "(Our earlier conversation was summarised to keep it within what I can read at once; "
    "the full transcript is kept.)"
)
"""Appended once to the reply of the turn that summarised."""

WINDOW_MARGIN = 4
"""Compact when the part that must be sent starts this close to the window's start: a
turn adds a few records (summary, user, assistant), which push the oldest ones out."""


def estimate_tokens(records: Sequence[ChatMessage]) -> int:
    """A rough, model-free estimate: ~4 characters per token, plus a few per message."""
    return sum(len(r.content) // 4 + 4 for r in records)


def last_summary(records: Sequence[ChatMessage]) -> int | None:
    for i in range(len(records) - 1, -1, -1):
        if records[i].summary:
            return i
    return None


def visible(records: Sequence[ChatMessage]) -> list[ChatMessage]:
    """What the agent is shown of a transcript tail: the last summary, the records it
    keeps, then everything after it (the whole tail when there is no summary)."""
    s = last_summary(records)
    if s is None:
        return list(records)
    kept = [r for r in records[max(0, s - records[s].keeps) : s] if not r.summary]
    return [records[s], *kept, *records[s + 1 :]]


@dataclass(frozen=True, slots=True)
class Compacted:
    history: list[ChatMessage]
    """The history to send instead."""
    summary: ChatMessage | None
    """The record to store with the turn's commit; None when it fell back to trimming."""


def needs_compaction(
    settings: AgentSettings,
    raw: Sequence[ChatMessage],
    history: Sequence[ChatMessage],
    new: Sequence[ChatMessage],
) -> bool:
    budget = settings.compact_after_tokens
    if not budget or not settings.history_limit:
        return False
    if estimate_tokens([*history, *new]) > budget:
        return True
    if len(raw) < settings.history_limit:
        return False  # the whole transcript is in the window
    s = last_summary(raw)
    start = 0 if s is None else max(0, s - raw[s].keeps)
    return start < WINDOW_MARGIN


async def compact(
    agent: Agent,
    settings: AgentSettings,
    raw: Sequence[ChatMessage],
    history: Sequence[ChatMessage],
    *,
    now: float,
    where: str,
) -> Compacted | None:
    """Summarise all but the most recent records of `history`; None when there is nothing
    older to summarise. `raw` is the transcript tail `history` was made from."""
    s = last_summary(raw)
    after = raw[s + 1 :] if s is not None else raw
    keep = settings.compact_keep_recent
    recent = list(after[-keep:]) if keep else []
    recent_ids = {id(r) for r in recent}
    older = [m for m in history if id(m) not in recent_ids]
    if not any(not m.summary for m in older):
        return None  # only an earlier summary (or nothing) is older than what is kept
    shown = [m for m in history if id(m) in recent_ids]
    summarize = getattr(agent, "summarize", None)
    try:
        if summarize is None:
            raise LookupError(f"agent {agent.name!r} has no summarize()")
        text = await summarize(older)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the summary was empty")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning(
            "%s: could not summarise %d older records (%s: %s); trimming them instead",
            where,
            len(older),
            type(exc).__name__,
            exc,
        )
        return Compacted(_trim(history, settings.compact_after_tokens), None)
    record = ChatMessage("system", text, now, summary=True, keeps=len(recent))
    log.info("%s: summarised %d older records, kept %d", where, len(older), len(recent))
    return Compacted([record, *shown], record)


def _trim(history: Sequence[ChatMessage], budget: int) -> list[ChatMessage]:
    """The newest records that fit `budget` (at least the newest one)."""
    out: list[ChatMessage] = []
    used = 0
    for record in reversed(history):
        used += estimate_tokens([record])
        if out and used > budget:
            break
        out.append(record)
    return out[::-1]
