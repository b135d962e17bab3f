"""Plugin agents as a user would write them: imported by `factory = "tests.fakes.plugin_agents:..."`.

They import only the public agent API (`core.agents`), as a plugin outside chatlane must.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from core.agents import AgentError, TurnInput


class ShoutingAgent:
    """Streams `<greeting> <what you said, upper-cased>` word by word; records each turn.

    `hold = true` in its options makes every turn wait for `release` (to be cancelled)."""

    name = "shouting"

    def __init__(self, options: dict[str, Any]) -> None:
        self.greeting = str(options.get("greeting", "HI"))
        self.hold = bool(options.get("hold", False))
        self.turns: list[TurnInput] = []
        self.cancelled = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.closed = False

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        self.turns.append(turn)
        said = " ".join(m.content for m in turn.new_messages if m.role == "user")
        if said == "fail":
            raise AgentError("the plugin's upstream said no")
        try:
            self.started.set()
            if self.hold:
                await self.release.wait()
            yield self.greeting
            for word in said.upper().split():
                yield f" {word}"
            yield f" (turn {turn.turn}, {len(turn.history)} earlier records)"
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def close(self) -> None:
        self.closed = True


def make_shouting(options: dict[str, Any]) -> ShoutingAgent:
    return ShoutingAgent(options)


def make_nothing(options: dict[str, Any]) -> object:
    """A factory that returns something that is not an agent."""
    return {"name": "not an agent"}


def make_broken(options: dict[str, Any]) -> ShoutingAgent:
    raise RuntimeError("the plugin needs an option it did not get")
