"""Earlier messages of a Discord channel or thread, for a session's first turn.

`BackfillingResponder` is the `DiscordResponder` of a message that also offers
`fetch_history` (core.model.HistorySource): the gateway calls it inside the turn lock
when the message starts a session, and stores what it returns with the turn. It reads
`history_backfill` messages before the triggering one (`GET /channels/{id}/messages
?before=`), which needs the Read Message History permission; without it, the log says
so and the turn is answered without history. Only messages in a channel the bot was
allowed to answer in are ever read: the gate ran before the turn was queued.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord

from bots.discord.inbound import ANSWERED_TYPES
from bots.discord.reply import DiscordResponder, PlatformFailure, describe_failure
from bots.discord.settings import DiscordSettings
from core.model import ChatMessage

log = logging.getLogger("chatlane.discord")

HISTORY_HINT = "give the bot the 'Read Message History' permission there, or set discord.history_backfill = 0"


class BackfillingResponder(DiscordResponder):
    """A `DiscordResponder` that can also read the channel's earlier messages."""

    def __init__(
        self,
        message: discord.Message | discord.PartialMessage | None,
        settings: DiscordSettings,
        me: discord.abc.Snowflake,
        *,
        channel: discord.abc.Messageable | None = None,
        answer: Sequence[discord.PartialMessage] = (),
    ) -> None:
        super().__init__(message, settings, me, channel=channel, answer=answer)
        self.me_id = me.id

    async def fetch_history(self) -> list[ChatMessage]:
        limit = self.settings.history_backfill
        if limit <= 0:
            return []
        try:
            found = [m async for m in self.channel.history(limit=limit, before=self.message)]
        except PlatformFailure as exc:
            log.warning(
                "discord: cannot read earlier messages in %s; answering without them: %s",
                self._where(),
                describe_failure(exc, HISTORY_HINT),
            )
            return []
        found.reverse()  # Discord answers newest first
        return [record(m, self.me_id) for m in found if m.type in ANSWERED_TYPES and _has_content(m)]


def _has_content(m: discord.Message) -> bool:
    return bool(m.content or m.attachments)


def record(m: discord.Message, me_id: int) -> ChatMessage:
    """One earlier message as a backfill record; the bot's own are the assistant's."""
    text = m.clean_content  # mentions as @names, not <@ids>
    if m.attachments:
        text = " ".join([text, *(f"[attachment: {a.filename}]" for a in m.attachments)]).strip()
    mine = m.author.id == me_id
    return ChatMessage(
        role="assistant" if mine else "user",
        content=text,
        at=m.created_at.timestamp(),
        message_id=str(m.id),
        author=m.author.display_name,
        backfill=True,
    )
