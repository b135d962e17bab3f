"""The agent API, and the agents a config names.

This module is the stable place for agent authors to import from:

    from core.agents import Agent, AgentError, ChatMessage, TurnInput

`PROTOCOL_VERSION` says which version of that contract this chatlane speaks (see the
README, "Writing an agent"); a change a plugin would notice bumps it.

Built-in backends: `echo` (offline, deterministic) and `openai` (any OpenAI-compatible
server). `python` calls `factory = "package.module:callable"`; any other backend name
is looked up in the `chatlane.agents` entry points of installed packages.
"""

from __future__ import annotations

from core.agents.base import Agent, Piece, Summarizer, TurnInput
from core.agents.echo import EchoAgent
from core.agents.plugins import ENTRY_POINT_GROUP, PluginError, import_factory, load_entry_point, make_plugin
from core.agents.showing import decode_text, inline_text, placeholder
from core.config import AgentSettings, ConfigError, Loaded
from core.model import AgentError, ChatMessage, SessionKey, Usage

PROTOCOL_VERSION = 1
"""Version 1: `stream(turn: TurnInput) -> AsyncIterator[str]`, `async close()`, `name`;
optional `async summarize(records) -> str`. `stream` may also yield `Usage` (tokens the
answer cost; see `Piece` in core/agents/base.py), which text-only agents never do.
TurnInput: session_key, session_id, turn, history, new_messages, model. ChatMessage: role,
content, at, message_id, interrupted, summary, keeps. Fields may be added (with defaults)
without a version change."""

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROTOCOL_VERSION",
    "Agent",
    "AgentError",
    "ChatMessage",
    "EchoAgent",
    "Piece",
    "SessionKey",
    "Summarizer",
    "TurnInput",
    "Usage",
    "decode_text",
    "inline_text",
    "make_agent",
    "make_agents",
    "placeholder",
]


def make_agents(loaded: Loaded) -> dict[str, Agent]:
    """One Agent per configured agent id, in config order.

    Raises `ConfigError` naming the key when a plugin cannot be imported, fails, or
    returns something that is not an Agent.
    """
    return {
        agent_id: _make(loaded, settings, _section(loaded, agent_id))
        for agent_id, settings in loaded.config.agent_table().items()
    }


def make_agent(loaded: Loaded) -> Agent:
    """The default agent alone (older callers)."""
    agent_id = loaded.config.default_agent_id()
    settings = loaded.config.agent_table()[agent_id]
    return _make(loaded, settings, _section(loaded, agent_id))


def _section(loaded: Loaded, agent_id: str) -> str:
    return f"agents.{agent_id}" if agent_id in loaded.config.agents else "agent"


def _make(loaded: Loaded, settings: AgentSettings, section: str) -> Agent:
    if settings.backend == "openai":
        from core.agents.openai import OpenAIAgent

        secret = loaded.secrets.get(settings.openai.api_key_env)
        return OpenAIAgent(
            settings,
            secret.get_secret_value() if secret else None,
            max_text_chars=loaded.config.attachments.max_text_chars,
        )
    if settings.backend == "echo":
        from core.agents.echo import EchoAgent

        return EchoAgent(delay_s=settings.echo_delay_ms / 1000)
    try:
        if settings.backend == "python":
            key = f"{section}.factory"
            factory = import_factory(settings.factory)
            where = f"factory {settings.factory!r}"
        else:
            key = f"{section}.backend"
            factory = load_entry_point(settings.backend)
            where = f"backend {settings.backend!r}"
        return make_plugin(factory, settings.options, where)
    except PluginError as exc:
        raise ConfigError(loaded.path, key, str(exc)) from exc
