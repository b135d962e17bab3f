"""The openai agent's tool loop against the real test MCP server and the fake LLM."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

from bots.testing import eventually, free_port
from bots.testing.fake_llm import CallTools, FakeLLM, tool_then_answer
from bots.testing.mcp_server import meaning
from core.agents import AgentEvent, ToolFailed, ToolFinished, ToolStarted, TurnInput
from core.agents.openai import OpenAIAgent
from core.config import AgentSettings, McpServerSettings, OpenAISettings
from core.model import ChatMessage, SessionKey, Usage
from tests.support.tools import SERVER, counted, tool_agent

KEY = SessionKey("agent:main:console:u:c")


def _turn(text: str) -> TurnInput:
    return TurnInput(KEY, "s1", 1, [], [ChatMessage("user", text)])


async def _run(agent: OpenAIAgent, text: str) -> tuple[str, list[AgentEvent]]:
    answer, events = "", []
    async for piece in agent.stream(_turn(text)):
        if isinstance(piece, str):
            answer += piece
        elif not isinstance(piece, Usage):
            events.append(piece)
    return answer, events


def _asks(tool: str) -> Any:
    return tool_then_answer(tool, lambda text: {"word": text} if tool == "lookup" else {})


async def test_a_question_is_answered_with_the_tools_result(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=_asks("lookup")) as llm:
        agent = tool_agent(llm, calls)
        try:
            answer, events = await _run(agent, "apple")
        finally:
            await agent.close()
    assert meaning("apple") in answer
    assert [type(e) for e in events] == [ToolStarted, ToolFinished]
    assert counted(calls) == ["lookup"]
    offered = [t["function"]["name"] for t in llm.calls[0].body["tools"]]
    assert "lookup" in offered
    assert llm.calls[1].messages[-1]["role"] == "tool"


async def test_the_allowlist_offers_only_the_listed_tools(tmp_path: Path) -> None:
    async with FakeLLM(reply=_asks("lookup")) as llm:
        agent = tool_agent(llm, tmp_path / "calls", server={"tools": ("lookup",)})
        try:
            await _run(agent, "pear")
        finally:
            await agent.close()
    assert [t["function"]["name"] for t in llm.calls[0].body["tools"]] == ["lookup"]


async def test_a_crashing_server_is_a_tool_error_and_the_next_turn_works(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=_asks("crash")) as llm:
        agent = tool_agent(llm, calls)
        try:
            answer, events = await _run(agent, "go")
            assert "The tool failed" in answer
            assert isinstance(events[-1], ToolFailed)
            llm.reply = _asks("lookup")
            answer, _ = await _run(agent, "plum")  # the server was restarted
        finally:
            await agent.close()
    assert meaning("plum") in answer
    assert counted(calls) == ["crash", "lookup"]


async def test_a_hanging_tool_times_out_and_the_next_call_works(tmp_path: Path) -> None:
    async with FakeLLM(reply=_asks("hang")) as llm:
        agent = tool_agent(llm, tmp_path / "calls", tool_timeout_s=0.5)
        try:
            answer, events = await _run(agent, "go")
            assert "no result within 0.5s" in answer
            assert isinstance(events[-1], ToolFailed)
            llm.reply = _asks("lookup")
            answer, _ = await _run(agent, "fig")
        finally:
            await agent.close()
    assert meaning("fig") in answer


async def test_a_huge_result_is_cut_before_the_model_sees_it(tmp_path: Path) -> None:
    async with FakeLLM(reply=_asks("huge")) as llm:
        agent = tool_agent(llm, tmp_path / "calls", tool_output_chars=1000)
        try:
            answer, _ = await _run(agent, "go")
        finally:
            await agent.close()
    shown = llm.calls[1].messages[-1]["content"]
    assert len(shown) < 1200
    assert "output cut: 10485760 characters in all, 1000 shown" in shown
    assert answer.startswith("using the tool:")


async def test_tool_rounds_are_limited_and_the_last_round_must_answer(tmp_path: Path) -> None:
    def always(messages: Any) -> str | CallTools:
        return CallTools([("lookup", {"word": "again"})])

    async with FakeLLM(reply=always) as llm:
        agent = tool_agent(llm, tmp_path / "calls", max_tool_rounds=2)
        try:
            answer, events = await _run(agent, "loop")
        finally:
            await agent.close()
    assert len(llm.calls) == 3
    assert "tools" not in llm.calls[-1].body
    assert answer == "no tools were offered"
    assert len([e for e in events if isinstance(e, ToolFinished)]) == 2


async def test_a_streamable_http_server_is_used_by_url(tmp_path: Path) -> None:
    port = free_port()
    calls = tmp_path / "calls"
    proc = await asyncio.create_subprocess_exec(
        *SERVER, "--http", str(port), env={**os.environ, "CALLS_FILE": str(calls)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with FakeLLM(reply=_asks("lookup")) as llm:
            settings = AgentSettings(
                backend="openai",
                openai=OpenAISettings(base_url=llm.base_url, max_retries=0),
                mcp=(McpServerSettings(name="web", url=f"http://127.0.0.1:{port}/mcp"),),
            )
            agent = OpenAIAgent(settings, None)
            try:
                await eventually(lambda: _listening(port), timeout=20)
                answer, _ = await _run(agent, "grape")
            finally:
                await agent.close()
    finally:
        proc.kill()
        await proc.wait()
    assert meaning("grape") in answer
    assert counted(calls) == ["lookup"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
