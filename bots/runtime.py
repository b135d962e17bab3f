"""What every adapter is given: the `Runtime` (config, store, agent, gateway, metrics)
and the `Service` shape it returns; `StartupError` for a bot that cannot start.

Adapters import this module, never the launcher that loads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from core.agents import Agent, make_agents
from core.config import Loaded
from core.door import Gateway
from core.ops import Metrics
from core.store import SessionStore, open_store


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
    """The default agent."""
    gateway: Gateway
    metrics: Metrics
    agents: dict[str, Agent] = field(default_factory=dict)
    """Every agent by id (one object may serve several ids when handed in)."""
    services: list[Service] = field(default_factory=list)
    """The bots the launcher made (the console's health page asks them how they are)."""

    @classmethod
    def build(
        cls, loaded: Loaded, *, agent: Agent | None = None, store: SessionStore | None = None
    ) -> Runtime:
        """Everything from the config; tests and embedders may hand in their own agent
        (it then serves every agent id) or store. A plugin agent that cannot be made is a
        `ConfigError` naming its key."""
        agents = dict.fromkeys(loaded.config.agent_table(), agent) if agent else make_agents(loaded)
        store = store or open_store(loaded)
        metrics = Metrics()
        gateway = Gateway(loaded.config, store, agents, metrics=metrics)
        return cls(loaded, store, gateway.agent, gateway, metrics, gateway.agents)

    async def close(self) -> None:
        await self.gateway.close()
        closed: set[int] = set()
        for agent in [*self.gateway.agents.values(), self.agent]:
            if id(agent) not in closed:  # one object may serve several agent ids
                closed.add(id(agent))
                await agent.close()
        await self.store.close()
