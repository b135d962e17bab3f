"""Who may talk to a bot: allowlists, DM policy, mention rules, bots.

Adapters translate a platform event into a `Seen` (the `Inbound` and the platform-neutral
`Facts` about it) in their inbound module, and ask `admit` once; a message it refuses
creates no session and no transcript record. Threads are checked against their
parent channel's allowlist entry too, so a thread cannot be used to slip past it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from core.config import Access
from core.model import Inbound


@dataclass(frozen=True, slots=True)
class Facts:
    user: str
    channel: str
    is_direct: bool
    mentioned_bot: bool
    author_is_bot: bool = False
    parent_channel: str | None = None
    space: str | None = None
    """Discord guild / Slack team."""
    roles: Collection[str] = field(default_factory=tuple)
    require_mention: bool | None = None
    """An override of the policy's rule for this place (e.g. a per-channel setting)."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One platform event, translated: the message for the gateway and the facts to gate it by."""

    inbound: Inbound
    facts: Facts


def admit(
    policy: Access,
    facts: Facts,
    *,
    allow_spaces: Collection[str] = (),
    allow_roles: Collection[str] = (),
) -> str | None:
    """None when the message may be answered, else the reason it may not (for the log)."""
    if facts.author_is_bot and not policy.allow_bots:
        return "author is a bot"
    if policy.allow_users and facts.user not in policy.allow_users:
        in_role = bool(allow_roles) and any(r in allow_roles for r in facts.roles)
        if not in_role:
            return "user not in allow_users"
    elif allow_roles and not facts.is_direct and not any(r in allow_roles for r in facts.roles):
        return "user has none of allow_roles"
    if facts.is_direct:
        if policy.dm_policy == "disabled":
            return "direct messages are disabled"
        if policy.dm_policy == "allowlist" and facts.user not in policy.allow_users:
            return "direct messages are limited to allow_users"
        return None
    if allow_spaces and facts.space not in allow_spaces:
        return "server/workspace not in the allowlist"
    if policy.allow_channels and not (
        facts.channel in policy.allow_channels
        or (facts.parent_channel is not None and facts.parent_channel in policy.allow_channels)
    ):
        return "channel not in allow_channels"
    needs_mention = policy.require_mention if facts.require_mention is None else facts.require_mention
    if needs_mention and not facts.mentioned_bot:
        return "not mentioned"
    return None
