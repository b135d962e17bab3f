"""Discord's side of a streamed answer: post, edit and delete messages of one reply.

`DiscordSurface` is the `Surface` (core/turn/streaming.py) the responder's `DraftStream` drives.
discord.py itself waits out a 429 (up to `max_ratelimit_wait_s`) and retries, which
slows the stream down; a longer limit fails the call, and the stream backs off and
shows everything received on its next try, so no text is lost either way.
"""

from __future__ import annotations

import logging

import discord

from bots.discord.failures import PlatformFailure, describe_failure

log = logging.getLogger("chatlane.discord")

SEND_HINT = "give the bot Send Messages (and Send Messages in Threads) there"


class DiscordSurface:
    """The messages of one streamed reply to `source`, in order."""

    append_only = False

    def __init__(self, source: discord.Message, *, reply_to: bool) -> None:
        self.source = source
        self.reply_to = reply_to
        self.sent: list[discord.Message] = []

    async def show(self, index: int, text: str, *, final: bool) -> bool:
        try:
            if index < len(self.sent):
                self.sent[index] = await self.sent[index].edit(content=text)
            elif index == 0 and self.reply_to:
                # A deleted original must not lose the answer: send it unthreaded then.
                ref = self.source.to_reference(fail_if_not_exists=False)
                self.sent.append(await self.source.channel.send(text, reference=ref))
            else:
                self.sent.append(await self.source.channel.send(text))
        except PlatformFailure as exc:
            verb = "edit" if index < len(self.sent) else "send"
            log.warning(
                "discord: could not %s part %d of the streamed reply to message %s: %s",
                verb,
                index + 1,
                self.source.id,
                describe_failure(exc, SEND_HINT),
            )
            return False
        return True

    async def drop(self, index: int) -> bool:
        try:
            await self.sent[index].delete()
        except PlatformFailure as exc:
            log.warning(
                "discord: could not delete a surplus part of the reply to message %s: %s",
                self.source.id,
                describe_failure(exc, "give the bot Manage Messages there"),
            )
            return False
        finally:
            del self.sent[index]
        return True
