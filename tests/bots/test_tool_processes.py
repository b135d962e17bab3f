"""Tools through real `chatlane` processes: the HTTP API (status as SSE comments, the
approval header) and the console (status lines, y/n approvals), with the test MCP server
and the fake LLM asking for tool calls."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp

from bots.testing import ChatlaneProcess, run_cli, write_config
from bots.testing.fake_llm import FakeLLM, tool_then_answer
from bots.testing.mcp_server import meaning
from tests.support.tools import SERVER, counted


def _agent_toml(llm: FakeLLM, calls: Path) -> str:
    return (
        f'[agent]\nbackend = "openai"\n[agent.openai]\nbase_url = "{llm.base_url}"\nmax_retries = 0\n'
        f'[[agent.mcp]]\nname = "test"\ncommand = {json.dumps(SERVER)}\n'
        f'env = {{ CALLS_FILE = "{calls}" }}\napproval = ["delete_file"]\n'
    )


async def _sse(url: str, text: str, headers: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """(content streamed, SSE comment lines) of one streamed completion."""
    body = {"model": "main", "stream": True, "user": "alice", "messages": [{"role": "user", "content": text}]}
    content, comments = "", []
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(": "):
                comments.append(line[2:])
            elif line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                content += delta.get("content") or ""
    return content, comments


async def test_http_streams_the_tool_status_as_comments_and_refuses_unapproved_tools(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("lookup", lambda t: {"word": t})) as llm:
        config = write_config(tmp_path, _agent_toml(llm, calls))
        child = await ChatlaneProcess.start(config, tmp_path / "run.log")
        try:
            url = f"{child.base_url}/chat/completions"
            answer, comments = await _sse(url, "lime")
            llm.reply = tool_then_answer("delete_file", lambda t: {"path": t})
            refused, _ = await _sse(url, "x.txt")
            approved, _ = await _sse(url, "y.txt", {"X-Chatlane-Approve": "delete_file"})
        finally:
            assert await child.terminate() == 0
    assert meaning("lime") in answer
    assert comments == ["🔧 Using lookup…", "🔧 Used lookup"]
    assert "denied" in refused
    assert "deleted y.txt" in approved
    assert counted(calls) == ["lookup", "delete_file"]


async def test_the_console_shows_the_status_and_asks_y_or_n(tmp_path: Path) -> None:
    """Each answer to a question is typed once the question shows (as a person would)."""
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t})) as llm:
        config = write_config(tmp_path, "enabled = false\n" + _agent_toml(llm, calls))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots", "chat", "--config", str(config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        out = b""
        try:
            async with asyncio.timeout(60):
                for text, answer in (("a.txt", "y"), ("b.txt", "n")):
                    proc.stdin.write(f"{text}\n".encode())
                    while out.count(b"[y/N]") < (1 if text == "a.txt" else 2):
                        out += await proc.stdout.read(1024)
                    proc.stdin.write(f"{answer}\n".encode())
                proc.stdin.close()
                out += await proc.stdout.read()
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    shown = out.decode()
    assert "using the tool: deleted a.txt" in shown
    assert "🔧 Used delete_file" in shown
    assert "A person denied this tool call" in shown
    assert counted(calls) == ["delete_file"]


async def test_check_lists_each_mcp_servers_tools(tmp_path: Path) -> None:
    async with FakeLLM() as llm:
        config = write_config(tmp_path, _agent_toml(llm, tmp_path / "calls"))
        done = await asyncio.to_thread(run_cli, "check", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "  mcp test: lookup, delete_file, crash, hang, huge" in done.stdout
