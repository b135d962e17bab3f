"""Which agent answers a message: `[[bindings]]`, first match wins, else the default agent.

The agent id is the first part of the session key, so each agent keeps its own memory
of a conversation. A rule's conditions all have to hold; each condition lists values of
which any one matches. A Discord thread matches a rule naming its parent channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import AgentSettings, Binding, Config
from core.model import Inbound

DISCORD = "discord"
SLACK = "slack"


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the routing table, for `chatlane check`."""

    rule: str
    agent: str
    warning: str = ""


def matches(rule: Binding, inbound: Inbound) -> bool:
    """Whether every condition of `rule` holds for `inbound`."""
    if rule.platform and inbound.platform not in rule.platform:
        return False
    if rule.guild and (inbound.platform != DISCORD or inbound.is_direct or inbound.space not in rule.guild):
        return False  # a Discord DM is in no server
    if rule.team and (inbound.platform != SLACK or inbound.space not in rule.team):
        return False
    if rule.channel and not (
        inbound.channel in rule.channel
        or (inbound.parent_channel is not None and inbound.parent_channel in rule.channel)
    ):
        return False
    if rule.dm is not None and inbound.is_direct != rule.dm:
        return False
    if rule.user and inbound.user not in rule.user:
        return False
    if rule.role and (inbound.platform != DISCORD or inbound.is_direct):
        return False  # roles are a Discord server's
    return not rule.role or any(r in rule.role for r in inbound.roles)


def describe(rule: Binding) -> str:
    """`platform=discord guild=1 channel=2|3`, or `(everything)`."""
    parts = [
        f"{name}={'|'.join(values)}"
        for name, values in (
            ("platform", rule.platform),
            ("guild", rule.guild),
            ("team", rule.team),
            ("channel", rule.channel),
            ("user", rule.user),
            ("role", rule.role),
        )
        if values
    ]
    if rule.dm is not None:
        parts.append(f"dm={str(rule.dm).lower()}")
    return " ".join(parts) or "(everything)"


def _platforms(rule: Binding) -> set[str] | None:
    """The platforms a rule can match (None: any)."""
    implied: set[str] | None = set(rule.platform) if rule.platform else None
    for needed, cond in ((DISCORD, rule.guild or rule.role), (SLACK, rule.team)):
        if cond:
            implied = {needed} if implied is None else implied & {needed}
    return implied


def impossible(rule: Binding) -> str:
    """Why a rule can match no message at all ("" when it can)."""
    platforms = _platforms(rule)
    if platforms is not None and not platforms:
        return "its conditions name different platforms (guild/role are Discord, team is Slack)"
    if rule.dm is True and (rule.guild or rule.role):
        return "a Discord direct message is in no guild and has no roles"
    return ""


def covers(earlier: Binding, later: Binding) -> bool:
    """Whether every message `later` matches is matched by `earlier` (so `later` is shadowed)."""
    wide, narrow = _platforms(earlier), _platforms(later)
    if wide is not None and (narrow is None or not narrow <= wide):
        return False
    for cond in ("guild", "team", "channel", "user", "role"):
        values: tuple[str, ...] = getattr(earlier, cond)
        if values and not (getattr(later, cond) and set(getattr(later, cond)) <= set(values)):
            return False
    return earlier.dm is None or earlier.dm == later.dm


class Router:
    """Agent settings by id, and the choice of agent for a message. Immutable after start."""

    def __init__(self, config: Config) -> None:
        self.agents: dict[str, AgentSettings] = config.agent_table()
        self.default = config.default_agent_id()
        self.bindings = config.bindings

    def settings(self, agent_id: str) -> AgentSettings:
        """KeyError for an unknown agent id."""
        return self.agents[agent_id]

    def choose(self, inbound: Inbound) -> str:
        """The agent id for `inbound` (ValueError when it asks for an agent that does not exist)."""
        if inbound.agent is not None:
            if inbound.agent not in self.agents:
                raise ValueError(f"no agent {inbound.agent!r} (agents: {', '.join(self.agents)})")
            return inbound.agent
        for rule in self.bindings:
            if matches(rule, inbound):
                return rule.agent
        return self.default

    def table(self) -> list[Route]:
        """The rules in order with a warning for each that can never match, then the default."""
        rows: list[Route] = []
        for i, rule in enumerate(self.bindings):
            warning = impossible(rule)
            if not warning:
                for j, earlier in enumerate(self.bindings[:i]):
                    if not impossible(earlier) and covers(earlier, rule):
                        warning = f"never matches: rule {j + 1} ({describe(earlier)}) matches first"
                        break
            rows.append(Route(f"{i + 1}. {describe(rule)}", rule.agent, warning))
        rows.append(Route("otherwise", self.default))
        return rows
