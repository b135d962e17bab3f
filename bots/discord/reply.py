"""`Reply` -> Discord messages, typing and reactions, for one inbound message.

Every platform call here swallows and logs its own failure (a 403 for a missing
permission, a rate limit longer than `max_ratelimit_wait_s`, a network error): a
failed send must never break the lane that runs the conversation, nor the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import discord

from bots.discord.settings import DiscordSettings
from core.chunking import split_message
from core.responders import QuietResponder
from core.types import Reply

log = logging.getLogger("chatlane.discord")

MESSAGE_LIMIT = 2000
"""Discord's limit on the characters of one message."""
TYPING_EVERY_S = 8.0
"""A typing indicator lasts about 10 s; refresh it before it lapses."""
TYPING_START_TIMEOUT_S = 3.0
"""The first indicator is awaited so it shows before the answer, but never for longer."""

PlatformFailure = (discord.DiscordException, aiohttp.ClientError, OSError)
"""What a Discord call can raise when Discord, the network or a permission says no
(TimeoutError is an OSError)."""

ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True)
"""An agent's text never pings @everyone, roles or people; a reply pings its asker."""


def describe_failure(exc: BaseException, hint: str) -> str:
    """A log line's worth about a failed Discord call; `hint` says what would fix a 403."""
    if isinstance(exc, discord.Forbidden):
        return f"missing permission (403, Discord code {exc.code}: {exc.text}); {hint}"
    if isinstance(exc, discord.RateLimited):
        return (
            f"rate limited for {exc.retry_after:.0f}s, longer than discord.max_ratelimit_wait_s; "
            "the message was not sent"
        )
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status} (Discord code {exc.code}: {exc.text})"
    return f"{type(exc).__name__}: {exc}"


class DiscordResponder(QuietResponder):
    """Answers one Discord message: typing while its turn runs, the reply in chunks."""

    def __init__(self, message: discord.Message, settings: DiscordSettings) -> None:
        self.message = message
        self.settings = settings

    def _where(self) -> str:
        guild = f" (guild {self.message.guild.id})" if self.message.guild is not None else " (DM)"
        return f"channel {self.message.channel.id}{guild}"

    async def send(self, reply: Reply) -> None:
        if reply.kind == "merged":  # the later message's reply answers this one too
            return
        chunks = [c for c in split_message(reply.text, MESSAGE_LIMIT) if c.strip()]
        if not chunks:
            log.warning("discord: empty %s for message %s not sent", reply.kind, self.message.id)
            return
        for i, chunk in enumerate(chunks):
            try:
                if i == 0 and self.settings.reply_to:
                    # A deleted original must not lose the answer: send it unthreaded then.
                    ref = self.message.to_reference(fail_if_not_exists=False)
                    await self.message.channel.send(chunk, reference=ref)
                else:
                    await self.message.channel.send(chunk)
            except PlatformFailure as exc:
                log.error(
                    "discord: could not send part %d/%d of the %s to message %s in %s: %s",
                    i + 1,
                    len(chunks),
                    reply.kind,
                    self.message.id,
                    self._where(),
                    describe_failure(exc, "give the bot Send Messages (and Send Messages in Threads) there"),
                )
                return

    async def on_queued(self) -> None:
        if not self.settings.ack_reaction:
            return
        try:
            await self.message.add_reaction(self.settings.ack_reaction)
        except PlatformFailure as exc:
            log.warning(
                "discord: could not react to message %s in %s: %s",
                self.message.id,
                self._where(),
                describe_failure(exc, "give the bot Add Reactions and Read Message History there"),
            )

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        refresh: asyncio.Task[None] | None = None
        if await self._type(timeout=TYPING_START_TIMEOUT_S):
            refresh = asyncio.create_task(self._keep_typing(), name=f"typing {self.message.id}")
        try:
            yield
        finally:
            if refresh is not None:
                refresh.cancel()
                await asyncio.gather(refresh, return_exceptions=True)

    async def _keep_typing(self) -> None:
        while True:
            await asyncio.sleep(TYPING_EVERY_S)
            if not await self._type(timeout=TYPING_EVERY_S):
                return

    async def _type(self, timeout: float) -> bool:
        """Show the typing indicator once; False (logged) when Discord refused it."""
        try:
            async with asyncio.timeout(timeout):
                await self.message.channel.typing()
        except PlatformFailure as exc:
            log.warning(
                "discord: no typing indicator in %s: %s",
                self._where(),
                describe_failure(exc, "give the bot Send Messages there"),
            )
            return False
        return True
