"""The tool loop's overhead per turn: the openai agent with and without MCP tools.

A local OpenAI-compatible stub (streamed, no delay) and the test MCP server
(bots/testing/mcp_server.py, stdio, started once) stand in for the model and the
tools, so what is measured is chatlane's own cost. Per turn, sequentially:

* no tools: the agent without `mcp` (one model request);
* tools offered, not used: the same answer with the server's 5 tools in the request;
* one tool call: model -> `lookup` (MCP call) -> model (two model requests);
* the MCP call alone, as the agent's toolbox makes it.

Checks: the answer of a tool turn holds the tool's result.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bench.common import Options
from bench.report import Report
from bots.testing.mcp_server import meaning
from bots.testing.server import serve_on_loopback
from core.agents import TurnInput
from core.agents.openai import OpenAIAgent
from core.config import AgentSettings, McpServerSettings, OpenAISettings
from core.model import ChatMessage, SessionKey

SERVER = (sys.executable, "-m", "bots.testing.mcp_server")


def _sse(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def _stub(use_tool: bool) -> tuple[web.AppRunner, int]:
    """A model that asks for `lookup` once (when `use_tool` and tools are offered), then answers."""

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        last = body["messages"][-1]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if use_tool and body.get("tools") and last["role"] == "user":
            call = {"index": 0, "id": "call_1", "type": "function"}
            call["function"] = {"name": "lookup", "arguments": json.dumps({"word": "bench"})}
            await resp.write(_sse({"role": "assistant", "tool_calls": [call]}))
            await resp.write(_sse({}, "tool_calls"))
        else:
            said = last["content"] if last["role"] == "tool" else "plain answer"
            for word in f"the answer is: {said}".split(" "):
                await resp.write(_sse({"content": word + " "}))
            await resp.write(_sse({}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return await serve_on_loopback(app)


def _agent(port: int, tools: bool) -> OpenAIAgent:
    mcp = (McpServerSettings(name="bench", command=SERVER),) if tools else ()
    settings = AgentSettings(
        backend="openai",
        openai=OpenAISettings(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0),
        mcp=mcp,
    )
    return OpenAIAgent(settings, None)


async def _turns(agent: OpenAIAgent, n: int, check: Callable[[str], bool]) -> tuple[list[float], bool]:
    turn = TurnInput(SessionKey("agent:main:bench:u:c"), "s", 1, [], [ChatMessage("user", "what is bench?")])
    took, ok = [], True
    for _ in range(n):
        t0 = time.perf_counter()
        answer = "".join([p async for p in agent.stream(turn) if isinstance(p, str)])
        took.append((time.perf_counter() - t0) * 1000)
        ok = ok and check(answer)
    return took, ok


async def run(opts: Options) -> Report:
    report = Report("tools")
    n = 20 if opts.quick else 200
    plain = lambda a: "plain answer" in a  # noqa: E731
    used = lambda a: meaning("bench") in a  # noqa: E731
    for name, use_tool, tools, check in (
        ("no tools", False, False, plain),
        ("tools offered, not used", False, True, plain),
        ("one tool call", True, True, used),
    ):
        runner, port = await _stub(use_tool)
        agent = _agent(port, tools)
        try:
            await agent.start()
            await _turns(agent, 3, check)  # warm: connections, the server's first call
            took, ok = await _turns(agent, n, check)
            if agent.toolbox is not None and name == "one tool call":
                server = agent.toolbox.servers[0]
                calls = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    await server.call("lookup", {"word": "bench"}, 10)
                    calls.append((time.perf_counter() - t0) * 1000)
                report.metric("MCP call alone (stdio)", "ms", calls, on="median")
        finally:
            await agent.close()
            await runner.cleanup()
        report.metric(f"turn: {name}", "ms", took, on="median")
        report.check(f"{name}: answers right", ok)
    report.note(f"{n} sequential turns each; stub model with no delay; test MCP server over stdio")
    return report
