"""An agent's tools: its MCP servers' tools, offered to the model, called with limits.

`Toolbox.run` is one tool call as the turn sees it: a stored outcome of an earlier run of
the same turn is reused (never run twice); an `approval` tool asks a person first; the
call has `tool_timeout_s`; its output is capped at `tool_output_chars`; every failure
(unknown tool, bad arguments, timeout, a server that died or refused) becomes a tool
error the model reads, never a failed turn. The outcome is stored before the model sees
it. Events (started / finished / failed) are yielded for the status line and the records.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.agents.base import ToolHost, ToolOutcome
from core.agents.tools.mcp import McpServer, ToolCallError, ToolSpec, result_text
from core.config import AgentSettings
from core.model import AgentEvent, ToolFailed, ToolFinished, ToolStarted, shown_arguments

log = logging.getLogger("chatlane.tools")

CUT_NOTE = "\n[output cut: {total} characters in all, {shown} shown]"
DENIED_TEXT = "A person denied this tool call; answer without it."
TIMEOUT_DENIED_TEXT = "Nobody approved this tool call in time; answer without it."
NO_APPROVER_TEXT = "This tool needs a person's approval, which cannot be asked for here; answer without it."


REMIND = ToolSpec(
    "builtin",
    "remind",
    "Set a reminder in this conversation: at the time given, `text` comes back to you as a "
    "message and you answer it then. Give `at` (ISO 8601 with a UTC offset) or `in_minutes`.",
    {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "what to be reminded of"},
            "at": {"type": "string", "description": "when, e.g. 2026-12-24T09:00:00+01:00"},
            "in_minutes": {"type": "number", "description": "or: this many minutes from now"},
        },
        "required": ["text"],
    },
)
"""The built-in `remind` tool (agent setting `remind = true`): a one-shot schedule."""
REMINDER_SET_TEXT = "Reminder {name} set for {at}."


@dataclass(slots=True)
class ToolCall:
    """One call the model asked for."""

    call_id: str
    name: str
    raw_arguments: str


@dataclass(slots=True)
class Ran:
    """Filled in by `Toolbox.run`: what the model is shown for the call."""

    text: str = ""
    error: bool = False
    events: list[AgentEvent] = field(default_factory=list)


class Toolbox:
    """The MCP servers of one agent, started once per process (`start`, idempotent)."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.servers = [McpServer(s) for s in settings.mcp]
        self._approval = {(s.name, t) for s in settings.mcp for t in s.approval}
        self._started = False
        self._lock = asyncio.Lock()
        self._seen: dict[str, int] = {}

    async def start(self) -> None:
        async with self._lock:
            if self._started:
                return
            self._started = True
            await asyncio.gather(*(s.start() for s in self.servers))

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.servers))

    def specs(self) -> dict[str, ToolSpec]:
        """Every offered tool by name (the first server listing a name wins)."""
        out: dict[str, ToolSpec] = {REMIND.name: REMIND} if self.settings.remind else {}
        for server in self.servers:
            for name, spec in server.tools.items():
                if name in out:
                    log.warning(
                        "tool %s of mcp server %s hidden by server %s", name, server.name, out[name].server
                    )
                    continue
                out[name] = spec
        return out

    def openai_tools(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "function",
                "function": {"name": s.name, "description": s.description, "parameters": s.parameters},
            }
            for s in self.specs().values()
        ]

    def _server(self, name: str) -> McpServer | None:
        spec = self.specs().get(name)
        return next((s for s in self.servers if spec and s.name == spec.server), None)

    async def run(
        self, call: ToolCall, host: ToolHost | None, occurrence: int, ran: Ran
    ) -> AsyncIterator[AgentEvent]:
        """Run one call (see the module doc); its text for the model lands in `ran`."""
        try:
            arguments = json.loads(call.raw_arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError:
            ran.text, ran.error = (
                "The arguments were not a JSON object; call the tool again with valid JSON.",
                True,
            )
            yield ToolFailed(call.call_id, call.name, "bad arguments")
            return
        shown = shown_arguments(arguments)
        key = call_key(call.name, arguments, occurrence)
        stored = await host.recall(key) if host is not None else None
        if stored is not None:
            ran.text, ran.error = stored.text, stored.error
            yield ToolFinished(call.call_id, call.name, shown, _summary(stored), reused=True)
            return
        if call.name == REMIND.name and self.settings.remind:
            yield ToolStarted(call.call_id, call.name, shown)
            ran.text, ok = await _remind(host, key, arguments)
            if ok:
                if host is not None:
                    await host.remember(key, ToolOutcome(None, ran.text))
                yield ToolFinished(call.call_id, call.name, shown, ran.text)
            else:
                ran.error = True
                yield ToolFailed(call.call_id, call.name, ran.text, shown)
            return
        server = self._server(call.name)
        if server is None:
            ran.text, ran.error = f"There is no tool named {call.name!r}.", True
            yield ToolFailed(call.call_id, call.name, "no such tool", shown)
            return
        decision = None
        if (server.name, call.name) in self._approval:
            decision = await host.approve(key, call.name, shown) if host is not None else "denied"
            if decision != "approved":
                text = TIMEOUT_DENIED_TEXT if decision == "timeout" else DENIED_TEXT
                if host is None:
                    text = NO_APPROVER_TEXT
                outcome = ToolOutcome(decision, text, error=True)
                if host is not None:
                    await host.remember(key, outcome)
                ran.text, ran.error = text, True
                yield ToolFailed(
                    call.call_id, call.name, "denied" if decision == "denied" else "not approved", shown
                )
                return
        yield ToolStarted(call.call_id, call.name, shown)
        try:
            result = await server.call(call.name, arguments, self.settings.tool_timeout_s)
            text, error = cap(result_text(result), self.settings.tool_output_chars), result.isError
        except ToolCallError as exc:
            text, error = f"The tool failed: {exc}", True
            log.warning("tool %s (mcp server %s) failed: %s", call.name, server.name, exc)
        outcome = ToolOutcome(decision, text, error)
        if host is not None:
            await host.remember(key, outcome)
        ran.text, ran.error = text, error
        if error:
            yield ToolFailed(call.call_id, call.name, text[:120], shown)
        else:
            yield ToolFinished(call.call_id, call.name, shown, _summary(outcome))


async def _remind(host: ToolHost | None, key: str, arguments: dict[str, Any]) -> tuple[str, bool]:
    """Set the reminder: the text the model reads (how it was set, or why not), and
    whether it was set."""
    text = arguments.get("text")
    if not isinstance(text, str) or not text.strip():
        return "A reminder needs a `text`.", False
    try:
        if isinstance(minutes := arguments.get("in_minutes"), int | float) and minutes > 0:
            at = datetime.now(UTC) + timedelta(minutes=float(minutes))
        elif isinstance(raw := arguments.get("at"), str):
            at = datetime.fromisoformat(raw)
            if at.tzinfo is None:
                return "Give `at` with a UTC offset (e.g. +00:00), or use `in_minutes`.", False
        else:
            return "Give `at` (ISO 8601 with a UTC offset) or `in_minutes`.", False
        if host is None:
            return "Reminders cannot be set here.", False
        name = await host.remind(key, text, at)
    except ValueError as exc:
        return f"The reminder was not set: {str(exc)[:200]}", False
    return REMINDER_SET_TEXT.format(name=name, at=at.isoformat(timespec="seconds")), True


def call_key(tool: str, arguments: dict[str, Any], occurrence: int) -> str:
    """A call's name within its turn: the same tool with the same arguments, counted."""
    digest = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()[:16]
    return f"{tool}:{digest}:{occurrence}"


def cap(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with a note saying so."""
    if len(text) <= limit:
        return text
    return text[:limit] + CUT_NOTE.format(total=len(text), shown=limit)


def _summary(outcome: ToolOutcome) -> str:
    return f"{len(outcome.text)} characters"
