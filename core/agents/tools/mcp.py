"""One MCP server, kept running for the whole process (the official `mcp` SDK as client).

`McpServer.start` launches the server (stdio: a child process; or streamable HTTP) and
lists its tools. One owner task holds the SDK's connection (its anyio contexts must be
entered and left by the same task) until `close`; calls come from any turn's task.

A server that died (its process exited, its connection closed) is noticed by the call
that hits it (a tool error for that call) and restarted by the owner task with backoff
(0.5 s doubling to 30 s); a call made meanwhile waits for it, within its own timeout.
A call that outlives its timeout is a tool error too; the server keeps running (MCP
servers answer requests concurrently, so one hung call blocks nothing else).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mcp import ClientSession, McpError, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CONNECTION_CLOSED, CallToolResult, TextContent

from core.config import McpServerSettings

log = logging.getLogger("chatlane.tools")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
START_TIMEOUT_S = 20.0
"""How long `start` waits for a server to list its tools before going on without them."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model is offered it."""

    server: str
    name: str
    description: str
    parameters: dict[str, Any]


class ToolCallError(Exception):
    """A call that produced no result; the text is short and fit for the model and people."""


class McpServer:
    """One configured server: its tools, its calls, its restarts. See the module doc."""

    def __init__(self, settings: McpServerSettings) -> None:
        self.settings = settings
        self.tools: dict[str, ToolSpec] = {}
        self.starts = 0
        """How many times a connection came up (restarts show as starts > 1)."""
        self._session: ClientSession | None = None
        self._up = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def name(self) -> str:
        return self.settings.name

    async def start(self) -> None:
        """Launch the owner task and wait (bounded) for the first tool list."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mcp server {self.name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), START_TIMEOUT_S)
        if not self._up.is_set():
            log.error(
                "mcp server %s did not start within %.0fs; its tools are missing", self.name, START_TIMEOUT_S
            )

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def call(self, tool: str, arguments: dict[str, Any], timeout_s: float) -> CallToolResult:
        """The server's result; `ToolCallError` when it timed out, is down or failed."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._up.wait()
                session = self._session
                if session is None:
                    raise ToolCallError("the tool server is not running")
                return await session.call_tool(
                    tool, arguments, read_timeout_seconds=timedelta(seconds=timeout_s)
                )
        except TimeoutError:
            raise ToolCallError(f"no result within {timeout_s:g}s") from None
        except McpError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                self._mark_lost()
                raise ToolCallError("the tool server stopped") from exc
            if exc.error.code == 408:  # the SDK's own read timeout
                raise ToolCallError(f"no result within {timeout_s:g}s") from exc
            raise ToolCallError(f"the tool server refused the call: {exc.error.message[:200]}") from exc
        except (OSError, EOFError, RuntimeError) as exc:  # anyio's closed/broken streams are these
            self._mark_lost()
            raise ToolCallError("the tool server stopped") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("anyio"):
                self._mark_lost()
                raise ToolCallError("the tool server stopped") from exc
            raise

    def _mark_lost(self) -> None:
        if self._up.is_set():
            log.warning("mcp server %s stopped; restarting it", self.name)
        self._up.clear()
        self._session = None
        self._lost.set()

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF_S
        while not self._closing:
            self._lost.clear()
            try:
                async with self._connect() as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    self.tools = self._allowed(listed.tools)
                    self._session = session
                    self.starts += 1
                    self._up.set()
                    log.info("mcp server %s is up: tools %s", self.name, ", ".join(self.tools) or "(none)")
                    backoff = FIRST_BACKOFF_S
                    await self._lost.wait()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the SDK raises ExceptionGroups from its task groups
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                log.warning("mcp server %s failed: %s; retrying in %.1fs", self.name, _first(exc), backoff)
            finally:
                self._up.clear()
                self._session = None
            if self._closing:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[ClientSession]:
        s = self.settings
        if s.url:
            async with (
                streamable_http_client(s.url) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                yield session
            return
        params = StdioServerParameters(
            command=s.command[0],
            args=list(s.command[1:]),
            env={**get_default_environment(), **_python_env(), **s.env},
        )
        # The server's stderr is chatlane's own (its log lines beside ours).
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            yield session

    def _allowed(self, tools: list[Any]) -> dict[str, ToolSpec]:
        allow = self.settings.tools
        out: dict[str, ToolSpec] = {}
        for t in tools:
            if allow is not None and t.name not in allow:
                continue
            out[t.name] = ToolSpec(self.name, t.name, t.description or "", dict(t.inputSchema))
        return out


def _python_env() -> dict[str, str]:
    """What a Python server started from this interpreter's environment needs to import
    (the SDK passes only a small safe set of variables by default)."""
    keep = ("PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k in keep if (v := os.environ.get(k)) is not None}


def _first(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


def result_text(result: CallToolResult) -> str:
    """A result as one text for the model: text parts joined, other parts named."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content]")
    if not parts and result.structuredContent is not None:
        parts.append(str(result.structuredContent))
    return "\n".join(parts)
