"""The test MCP server as agent settings, and the openai agent with tools against the fake LLM."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bots.testing.fake_llm import FakeLLM
from core.agents.openai import OpenAIAgent
from core.config import AgentSettings, McpServerSettings, OpenAISettings

SERVER = [sys.executable, "-m", "bots.testing.mcp_server"]


def mcp_settings(calls: Path, **extra: Any) -> McpServerSettings:
    """The test server (bots/testing/mcp_server.py) counting its calls in `calls`."""
    return McpServerSettings(name="test", command=tuple(SERVER), env={"CALLS_FILE": str(calls)}, **extra)


def tool_settings(
    llm: FakeLLM, calls: Path, *, server: dict[str, Any] | None = None, **extra: Any
) -> AgentSettings:
    return AgentSettings(
        backend="openai",
        openai=OpenAISettings(base_url=llm.base_url, max_retries=0),
        mcp=(mcp_settings(calls, **(server or {})),),
        **extra,
    )


def tool_agent(llm: FakeLLM, calls: Path, **extra: Any) -> OpenAIAgent:
    return OpenAIAgent(tool_settings(llm, calls, **extra), None)


def counted(calls: Path) -> list[str]:
    """The tools the server ran, in order."""
    return calls.read_text(encoding="utf-8").split() if calls.exists() else []
