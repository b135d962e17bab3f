"""Plugin agents as a user would write them: imported by `factory = "tests.fakes.plugin_agents:..."`.

They import only the public agent API (`core.agents`), as a plugin outside chatlane must.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from pathlib import Path
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


DISTRIBUTION_MODULE = """
from core.agents import TurnInput


class Registered:
    name = "registered"

    def __init__(self, options):
        self.suffix = options.get("suffix", "")

    async def stream(self, turn: TurnInput):
        said = " ".join(m.content for m in turn.new_messages)
        yield "registered agent heard: "
        yield said + self.suffix

    async def close(self):
        return None


def make(options):
    return Registered(options)
"""
ENTRY_POINT = "testplug"
"""The backend name the test distribution registers in `chatlane.agents`."""


def write_distribution(site: Path) -> Path:
    """A real installed distribution in `site`, as pip leaves one (module + `*.dist-info`
    with METADATA and entry_points.txt): put `site` on sys.path (or PYTHONPATH) and
    importlib.metadata finds its `chatlane.agents` entry point `testplug`."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "chatlane_testplug.py").write_text(DISTRIBUTION_MODULE, encoding="utf-8")
    info = site / "chatlane_testplug-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: chatlane-testplug\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[chatlane.agents]\n{ENTRY_POINT} = chatlane_testplug:make\n", encoding="utf-8"
    )
    importlib.invalidate_caches()
    return site
