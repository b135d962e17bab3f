"""Compaction: past the budget, older records become one stored summary record; the
agent is then shown summary + recent records, the person is told once, the transcript
keeps everything, and a failed summary trims instead of failing the turn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots.testing.agents import RecordingAgent, Replies
from core.agents.echo import EchoAgent
from core.config import AgentSettings, Config
from core.door.gateway import Gateway
from core.model.keys import SessionKey
from core.model.messages import ChatMessage, Inbound, Reply
from core.store.files.store import FileStore
from core.turn.compaction import COMPACTED_NOTE, estimate_tokens, visible

PAD = "with a few more words so that it weighs something"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    s = FileStore(tmp_path / "state")
    yield s
    await s.close()


def gateway(store: FileStore, agent: RecordingAgent, **settings: object) -> Gateway:
    config = Config(agent=AgentSettings(**settings))  # type: ignore[arg-type]
    return Gateway(config, store, agent)


async def talk(gw: Gateway, n: int) -> list[Reply]:
    replies = []
    for i in range(n):
        inbox = Replies()
        await gw.submit(Inbound("test", "alice", "general", f"message {i} {PAD}", f"m{i}"), inbox)
        async with asyncio.timeout(10):
            await inbox.done.wait()
        replies.append(inbox.replies[-1])
    return replies


async def transcript(store: FileStore, key: SessionKey) -> list[ChatMessage]:
    entry = await store.get(key)
    assert entry is not None
    return await store.tail(entry.session_id, 10_000)


async def test_past_the_budget_the_agent_sees_one_summary_plus_recent_records(store: FileStore) -> None:
    agent = RecordingAgent()
    gw = gateway(store, agent, compact_after_tokens=200, compact_keep_recent=2)
    replies = await talk(gw, 8)
    await gw.close()
    records = await transcript(store, replies[0].session_key)
    summaries = [r for r in records if r.summary]
    told = [r for r in replies if COMPACTED_NOTE in r.text]

    assert all(r.kind == "answer" for r in replies)
    assert summaries, "no summary was made"
    assert len(told) == len(summaries) == len(agent.summarized)  # told once per summary
    assert all(r.text.count(COMPACTED_NOTE) <= 1 for r in replies)
    assert len({s.content for s in summaries}) == len(summaries)  # each summary stored once
    # Every record is kept: 8 user + 8 assistant + the summaries.
    assert [r.content for r in records if r.role == "user"] == [f"message {i} {PAD}" for i in range(8)]
    assert len([r for r in records if r.role == "assistant"]) == 8
    assert len(records) == 16 + len(summaries)
    # The turn after the first summary: summary first, then its kept records word for word.
    first = next(i for i, r in enumerate(replies) if COMPACTED_NOTE in r.text)
    assert first + 1 < len(agent.turns), "the first summary came too late to see it used"
    shown = agent.turns[first + 1].history
    at = records.index(summaries[0])
    assert shown[0] == summaries[0] and summaries[0].keeps == 2
    assert list(shown[1:3]) == records[at - 2 : at]
    assert list(shown[3:]) == records[at + 1 : at + 3]
    # The turn that summarised was answered from the summary, not the full history.
    compacting_turn = agent.turns[first]
    assert compacting_turn.history[0].summary and len(compacting_turn.history) == 3
    assert agent.summarized[0][0].content == "message 0 " + PAD


async def test_the_note_is_streamed_too_and_not_stored_as_the_answer(store: FileStore) -> None:
    agent = RecordingAgent()
    gw = gateway(store, agent, compact_after_tokens=150, compact_keep_recent=0)
    replies = await talk(gw, 5)
    await gw.close()
    records = await transcript(store, replies[0].session_key)
    assert any(COMPACTED_NOTE in r.text for r in replies)
    assert not any(COMPACTED_NOTE in r.content for r in records)


async def test_a_failed_summary_trims_the_history_and_the_turn_is_answered(
    store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    agent = RecordingAgent()
    agent.fail_summaries = True
    gw = gateway(store, agent, compact_after_tokens=200, compact_keep_recent=2)
    with caplog.at_level(logging.WARNING, "chatlane.compaction"):
        replies = await talk(gw, 8)
    await gw.close()
    records = await transcript(store, replies[0].session_key)
    assert all(r.kind == "answer" and COMPACTED_NOTE not in r.text for r in replies)
    assert agent.summarized and not any(r.summary for r in records)
    assert len(records) == 16
    last = agent.turns[-1]
    assert len(last.history) < 14  # trimmed, not everything
    assert estimate_tokens(last.history) <= 200
    assert "trimming them instead" in caplog.text


async def test_a_small_window_never_drops_the_summary_silently(store: FileStore) -> None:
    """With a huge budget but history_limit 6, the window's overflow summarises, so every
    later turn still sees a summary of what fell out of the window."""
    agent = RecordingAgent()
    gw = gateway(store, agent, compact_after_tokens=1_000_000, compact_keep_recent=2, history_limit=6)
    await talk(gw, 10)
    await gw.close()
    first = next(i for i, t in enumerate(agent.turns) if any(m.summary for m in t.history))
    assert all(any(m.summary for m in t.history) for t in agent.turns[first:])
    assert "message 0" in next(m.content for m in agent.turns[-1].history if m.summary)


async def test_compaction_is_off_by_default(store: FileStore) -> None:
    agent = RecordingAgent()
    gw = gateway(store, agent, history_limit=100)
    await talk(gw, 8)
    await gw.close()
    assert not agent.summarized and len(agent.turns[-1].history) == 14


async def test_the_echo_agent_summarises_deterministically() -> None:
    records = [
        ChatMessage("user", "first"),
        ChatMessage("assistant", "echo: first"),
        ChatMessage("user", "second"),
    ]
    echo = EchoAgent()
    assert await echo.summarize(records) == await echo.summarize(records) == "you said: first / second"
    older = [ChatMessage("system", "you said: zero", summary=True), *records]
    assert await echo.summarize(older) == "you said: zero; you said: first / second"


def test_visible_shows_the_last_summary_its_kept_records_and_what_follows() -> None:
    r = [ChatMessage("user", str(i)) for i in range(6)]
    s = ChatMessage("system", "sum", summary=True, keeps=2)
    after = [ChatMessage("user", "7"), ChatMessage("assistant", "8")]
    assert visible([*r, s, *after]) == [s, r[4], r[5], *after]
    assert visible(r) == r


async def test_a_turn_that_summarised_and_then_failed_keeps_the_summary_and_says_so(store: FileStore) -> None:
    agent = RecordingAgent()
    agent.fail_on = {f"message 3 {PAD}"}  # the turn that summarises first (see the test above)
    gw = gateway(store, agent, compact_after_tokens=200, compact_keep_recent=2)
    replies = await talk(gw, 4)
    await gw.close()
    records = await transcript(store, replies[0].session_key)
    assert replies[3].kind == "failure" and replies[3].text.endswith(COMPACTED_NOTE)
    assert [r.summary for r in records[-2:]] == [True, False]  # the summary, then the kept message
    assert records[-1].content == f"message 3 {PAD}"
