"""Agents: `echo` (offline, deterministic) and `openai` (any OpenAI-compatible server)."""

from __future__ import annotations

from core.config import Loaded
from core.types import Agent


def make_agent(loaded: Loaded) -> Agent:
    settings = loaded.config.agent
    if settings.backend == "openai":
        from core.agents.openai import OpenAIAgent

        key = loaded.secrets.get(settings.openai.api_key_env)
        return OpenAIAgent(settings, key.get_secret_value() if key else None)
    from core.agents.echo import EchoAgent

    return EchoAgent(delay_s=settings.echo_delay_ms / 1000)
