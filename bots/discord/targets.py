"""Stored reply targets -> Discord responders, for messages this process never saw (an
inbox item resumed after a restart or adopted from a process that died).

discord.py's `PartialMessageable` / `PartialMessage` address a channel and a message by
id alone, without a gateway event or a fetch, so a resumed answer costs no extra call:
the reply goes to the target's channel (a thread is its own channel), as a reply to its
`reply_to` message, and with `answer_ids` into those messages, edited in place.
"""

from __future__ import annotations

import discord

from bots.discord.history import BackfillingResponder
from bots.discord.inbound import PLATFORM
from bots.discord.settings import DiscordSettings
from core.door import NoAdapter
from core.model import ReplyTarget


class Targets:
    """The factory `gateway.targets` calls for a `discord` target (see the module doc)."""

    def __init__(self, client: discord.Client, settings: DiscordSettings) -> None:
        self.client = client
        self.settings = settings

    def responder(self, target: ReplyTarget) -> BackfillingResponder:
        """A responder answering in the target's channel; ValueError for a target that is
        not a Discord one or whose ids are not snowflakes (a damaged record), and
        `NoAdapter` before the client has logged in."""
        me = self.client.user
        if me is None:
            raise NoAdapter("discord: not logged in yet")
        if target.platform != PLATFORM:
            raise ValueError(f"not a Discord target: {target.platform!r}")
        guild = dict(target.extra).get("guild")
        channel = self.client.get_partial_messageable(
            _snowflake(target.channel), guild_id=_snowflake(guild) if guild else None
        )
        message = channel.get_partial_message(_snowflake(target.reply_to)) if target.reply_to else None
        answer = [channel.get_partial_message(_snowflake(i)) for i in target.answer_ids]
        return BackfillingResponder(message, self.settings, me, channel=channel, answer=answer)


def _snowflake(value: str) -> int:
    if not value.isdigit() or len(value) > 20:
        raise ValueError(f"not a Discord id: {value[:40]!r}")
    return int(value)
