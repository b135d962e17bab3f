"""Discord's side of a streamed answer: post, edit and delete messages of one reply.

`DiscordSurface` is the `Surface` (core/turn/streaming.py) the responder's `DraftStream` drives.
discord.py itself waits out a 429 (up to `max_ratelimit_wait_s`) and retries, which
slows the stream down; a longer limit fails the call, and the stream backs off and
shows everything received on its next try, so no text is lost either way.

A resumed answer (`answer_ids`: the messages a process that died had begun it in) starts
with those messages as its parts, in order, `PartialMessage`s edited without fetching
them first. `ids` names every message the moment Discord returned it, so core stores it
before the answer goes on (core/turn/streaming.py `on_messages`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord

from bots.discord.failures import PlatformFailure, describe_failure

log = logging.getLogger("chatlane.discord")

SEND_HINT = "give the bot Send Messages (and Send Messages in Threads) there"


class DiscordSurface:
    """The messages of one streamed reply to `source` (None: a message of the bot's own,
    replying to nothing) in `channel`, in order."""

    append_only = False

    def __init__(
        self,
        channel: discord.abc.Messageable,
        source: discord.Message | discord.PartialMessage | None,
        *,
        reply_to: bool,
        answer: Sequence[discord.PartialMessage] = (),
    ) -> None:
        self.channel = channel
        self.source = source
        self.reply_to = reply_to and source is not None
        self.sent: list[discord.Message | discord.PartialMessage] = list(answer)

    @property
    def ids(self) -> list[str]:
        """The ids of the answer's messages, in order."""
        return [str(m.id) for m in self.sent]

    def _about(self) -> str:
        return f"message {self.source.id}" if self.source is not None else "a message of the bot's"

    async def show(self, index: int, text: str, *, final: bool) -> bool:
        try:
            if index < len(self.sent):
                self.sent[index] = await self.sent[index].edit(content=text)
            elif index == 0 and self.reply_to and self.source is not None:
                # A deleted original must not lose the answer: send it unthreaded then.
                ref = self.source.to_reference(fail_if_not_exists=False)
                self.sent.append(await self.channel.send(text, reference=ref))
            else:
                self.sent.append(await self.channel.send(text))
        except PlatformFailure as exc:
            verb = "edit" if index < len(self.sent) else "send"
            log.warning(
                "discord: could not %s part %d of the streamed reply to %s: %s",
                verb,
                index + 1,
                self._about(),
                describe_failure(exc, SEND_HINT),
            )
            return False
        return True

    async def drop(self, index: int) -> bool:
        try:
            await self.sent[index].delete()
        except discord.NotFound:
            pass  # already gone (deleted by someone): what was asked
        except PlatformFailure as exc:
            log.warning(
                "discord: could not delete a surplus part of the reply to %s (it is blanked): %s",
                self._about(),
                describe_failure(exc, "give the bot Manage Messages there"),
            )
            return False  # kept: the stream blanks it
        del self.sent[index]
        return True
