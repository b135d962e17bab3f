"""What every adapter is given: the `Runtime` (config, store, agent, gateway, metrics)
and the `Service` shape it returns; `StartupError` for a bot that cannot start.

Adapters import this module, never the launcher that loads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.agents import make_agent
from core.config import Loaded
from core.gateway import Gateway
from core.metrics import Metrics
from core.store import open_store
from core.types import Agent, SessionStore


class Service(Protocol):
    name: str

    async def start(self) -> None:
        """Connect and begin taking messages; raise `StartupError` if it cannot."""
        ...

    async def stop(self) -> None:
        """Stop taking new messages and disconnect."""
        ...

    def describe(self) -> str:
        """Where it listens, for the startup banner."""
        ...


class StartupError(Exception):
    """An enabled bot could not start; the message is for the person running chatlane."""


@dataclass(slots=True)
class Runtime:
    loaded: Loaded
    store: SessionStore
    agent: Agent
    gateway: Gateway
    metrics: Metrics

    @classmethod
    def build(
        cls, loaded: Loaded, *, agent: Agent | None = None, store: SessionStore | None = None
    ) -> Runtime:
        """Everything from the config; tests and embedders may hand in their own agent or store."""
        store = store or open_store(loaded)
        agent = agent or make_agent(loaded)
        metrics = Metrics()
        gateway = Gateway(loaded.config, store, agent, metrics=metrics)
        return cls(loaded, store, agent, gateway, metrics)

    async def close(self) -> None:
        await self.gateway.close()
        await self.agent.close()
        await self.store.close()
