"""Turns that call tools, through the real gateway, the test MCP server and the fake LLM:
records, approvals (here, by click on any gateway, refused for others, timeout), and a
turn run again that reuses its stored tool outcomes instead of running the tool twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bots.testing import Replies, eventually
from bots.testing.fake_llm import CallTools, FakeLLM, tool_then_answer
from bots.testing.mcp_server import meaning
from core.agents import ApprovalWaiting, ToolFinished, ToolStarted, TurnInput
from core.agents.openai import OpenAIAgent
from core.config import Config, SchedulerSettings
from core.door import Gateway
from core.model import REDACTED, ChatMessage, Inbound, Reply, SessionKey
from core.store.files.store import FileStore
from core.turn.tools import TurnTools
from tests.core.conftest import Gateways
from tests.support.tools import counted, tool_agent, tool_settings


def _config(llm: FakeLLM, calls: Path, **extra: Any) -> Config:
    return Config(agents={"main": tool_settings(llm, calls, **extra)})


async def _ask(gw: Gateway, text: str, replies: Replies, user: str = "alice") -> None:
    await gw.submit(Inbound("test", user, "general", text, f"m-{text}"), replies)


async def _answer(replies: Replies) -> Reply:
    async with asyncio.timeout(20):
        await replies.done.wait()
    return replies.replies[-1]


async def test_a_tool_call_is_a_record_of_the_turn_with_secrets_redacted(
    tmp_path: Path, gateways: Gateways
) -> None:
    calls = tmp_path / "calls"
    reply = tool_then_answer("lookup", lambda text: {"word": text, "api_key": "sk-secret"})
    async with FakeLLM(reply=reply) as llm:
        config = _config(llm, calls)
        agent = tool_agent(llm, calls)
        gw = gateways(config, agent)
        replies = Replies()
        await _ask(gw, "kiwi", replies)
        answer = await _answer(replies)
        await agent.close()
        entry = await gw.store.get(answer.session_key)
        assert entry is not None
        records = await gw.store.tail(entry.session_id, 10)
    assert meaning("kiwi") in answer.text
    assert [type(e) for e in replies.events] == [ToolStarted, ToolFinished]
    tool = [r for r in records if r.tool]
    assert len(tool) == 1 and tool[0].tool == "lookup"
    assert REDACTED in tool[0].content and "sk-secret" not in tool[0].content
    assert "sk-secret" not in tool[0].tool_arguments
    assert [r.role for r in records] == ["user", "assistant", "assistant"]


def _approval(llm: FakeLLM, calls: Path, **extra: Any) -> tuple[Config, Any]:
    server = {"approval": ("delete_file",)}
    config = _config(llm, calls, server=server, **extra)
    return config, tool_agent(llm, calls, server=server, **extra)


async def test_denied_here_the_model_answers_without_the_tool(tmp_path: Path, gateways: Gateways) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t})) as llm:
        config, agent = _approval(llm, calls)
        gw = gateways(config, agent)
        replies = Replies(decide="denied")
        await _ask(gw, "a.txt", replies)
        answer = await _answer(replies)
        await agent.close()
    assert counted(calls) == []
    assert "denied" in answer.text
    assert any(isinstance(e, ApprovalWaiting) for e in replies.events)


async def test_a_click_on_another_gateway_continues_the_turn_and_others_are_refused(
    tmp_path: Path, gateways: Gateways
) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t})) as llm:
        config, agent = _approval(llm, calls)
        first = gateways(config, agent)
        other = gateways(config, agent, FileStore(tmp_path / "state"))  # another process's view
        replies = Replies(decide=None)  # buttons: wait for a click
        await _ask(first, "b.txt", replies)
        found = await eventually(lambda: [e for e in replies.events if isinstance(e, ApprovalWaiting)])
        waiting = found[0]
        refused = await other.decide_approval(waiting.approval_id, "approved", "mallory")
        assert refused.outcome == "refused"
        await asyncio.sleep(0.3)  # a refused click must not have let the turn on
        assert not replies.done.is_set() and counted(calls) == []
        decided = await other.decide_approval(waiting.approval_id, "approved", "alice")
        answer = await _answer(replies)
        await agent.close()
    assert decided.outcome == "decided" and decided.approval is not None and decided.approval.by == "alice"
    assert counted(calls) == ["delete_file"]
    assert "deleted b.txt" in answer.text


async def test_nobody_deciding_in_time_denies(tmp_path: Path, gateways: Gateways) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t})) as llm:
        config, agent = _approval(llm, calls, approval_timeout_s=0.5)
        gw = gateways(config, agent)
        replies = Replies(decide=None)
        await _ask(gw, "c.txt", replies)
        answer = await _answer(replies)
        await agent.close()
    assert counted(calls) == []
    assert "Nobody approved" in answer.text


async def test_a_turn_run_again_reuses_its_stored_tool_outcome(tmp_path: Path) -> None:
    """What a resumed turn does (same session, same turn number): the approved tool is
    not run a second time; its stored result is shown to the model again."""
    calls = tmp_path / "calls"
    store = FileStore(tmp_path / "state")
    async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t})) as llm:
        server = {"approval": ("delete_file",)}
        settings = tool_settings(llm, calls, server=server)
        agent = tool_agent(llm, calls, server=server)
        turn = TurnInput(
            SessionKey("agent:main:test:alice:general"), "s1", 3, [], [ChatMessage("user", "d.txt")]
        )
        answers = []
        try:
            for _run in range(2):  # the second run stands for the turn resumed after a crash
                host = TurnTools(
                    store.approvals, settings, turn.session_key, "s1:3", "alice", Replies(decide="approved")
                )
                pieces = [p async for p in agent.stream(TurnInput(**{**_fields(turn), "tools": host}))]
                answers.append("".join(p for p in pieces if isinstance(p, str)))
                if _run == 1:
                    assert any(isinstance(p, ToolFinished) and p.reused for p in pieces)
        finally:
            await agent.close()
            await store.close()
    assert counted(calls) == ["delete_file"]
    assert answers[0] == answers[1] and "deleted d.txt" in answers[0]


def _fields(turn: TurnInput) -> dict[str, Any]:
    return {f: getattr(turn, f) for f in TurnInput.__dataclass_fields__}


async def test_the_remind_tool_sets_a_one_shot_schedule_that_comes_back_once(
    tmp_path: Path, gateways: Gateways
) -> None:
    """The built-in `remind` tool (off by default) through the schedules' seam: the reminder
    fires once as an operator prompt in the same conversation, answered by the model."""

    def reply(messages: Sequence[dict[str, Any]]) -> str | CallTools:
        last = messages[-1]
        if last.get("role") == "tool":
            return f"ok: {last['content']}"
        if last.get("content") == "water the plants":
            return "time to water the plants!"
        return CallTools([("remind", {"text": "water the plants", "in_minutes": 0.01})])

    async with FakeLLM(reply=reply) as llm:
        settings = tool_settings(llm, tmp_path / "calls", remind=True)
        settings = settings.model_copy(update={"mcp": ()})
        config = Config(agents={"main": settings}, scheduler=SchedulerSettings(poll_s=0.1, lease_s=5))
        agent = OpenAIAgent(settings, None)
        gw = gateways(config, agent)
        gw.start_schedules()
        replies = Replies()
        await gw.submit(Inbound("http", "ops", "api", "remind me to water the plants", "m-1"), replies)
        answer = await _answer(replies)
        key = answer.session_key

        async def fired() -> list[ChatMessage]:
            entry = await gw.store.get(key)
            records = [] if entry is None else await gw.store.tail(entry.session_id, 50)
            return records if any("time to water" in r.content for r in records) else []

        records = await eventually(fired, timeout=15)
        await asyncio.sleep(0.5)  # a second fire would have come by now
        entry = await gw.store.get(key)
        assert entry is not None
        records = await gw.store.tail(entry.session_id, 50)
        await agent.close()
    assert answer.text.startswith("ok: Reminder remind-")
    assert [r.content for r in records if r.role == "user"] == [
        "remind me to water the plants",
        "water the plants",
    ]
    assert len([r for r in records if "time to water" in r.content]) == 1
    assert [r.tool for r in records if r.tool] == ["remind"]
