"""The fake OpenAI-compatible server as a fixture, and the openai agent pointed at it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from bots.testing.fake_llm import FakeLLM
from core.agents.openai import OpenAIAgent
from core.config import AgentSettings, OpenAISettings

WHEN = re.compile(r" \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\):")


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


def untimed(content: object) -> object:
    """A backfilled line without its time (the fakes' times are all "now")."""
    return WHEN.sub(":", content, count=1) if isinstance(content, str) else content


def model_agent(llm: FakeLLM, *, vision: bool = False) -> OpenAIAgent:
    """The openai agent against the fake, no retries."""
    settings = AgentSettings(
        backend="openai", openai=OpenAISettings(base_url=llm.base_url, max_retries=0, vision=vision)
    )
    return OpenAIAgent(settings, None)
