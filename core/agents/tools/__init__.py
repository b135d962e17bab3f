"""Tools for agents: MCP servers (one per `[[agents.<id>.mcp]]`, started once per process)
and the `Toolbox` that offers their tools to the model and runs each call with limits,
approvals and durable outcomes."""

from __future__ import annotations

from core.agents.tools.mcp import McpServer, ToolCallError, ToolSpec
from core.agents.tools.toolbox import Ran, Toolbox, ToolCall, call_key, cap

__all__ = ["McpServer", "Ran", "ToolCall", "ToolCallError", "ToolSpec", "Toolbox", "call_key", "cap"]
