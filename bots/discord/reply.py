"""`Reply` -> Discord messages, typing and reactions, for one inbound message.

With `stream = "edit"` (the default) the answer shows as it grows: `DraftStream`
(core/turn/streaming.py) posts it early and edits it in place through `DiscordSurface`
(bots/discord/stream.py), rolling over at 2,000 characters; the final reply edits the
messages to exactly the answer. A cut-off answer (interrupt, `/stop`, shutdown, agent
failure) is edited to say so. With `status_reactions` the asker's message carries ⏳
(waiting), 👀 (being answered), then ✅ or ⚠️.

A responder needs no gateway event: the one for a stored `ReplyTarget` (a message resumed
after a restart, bots/discord/targets.py) answers through a `PartialMessageable` and
`PartialMessage`s, and with `answer_ids` continues the answer in those messages, edited
in place from the start of the new answer (surplus ones deleted). Each message the
streamed answer posts is reported to core (`track_answer`) as soon as Discord returns
it, and stored before the answer goes on, so that the next process can do so.

Every platform call here swallows and logs its own failure (a 403 for a missing
permission, a rate limit longer than `max_ratelimit_wait_s`, a network error): a
failed send must never break the lane that runs the conversation, nor the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import discord

from bots.discord import approvals
from bots.discord.failures import PlatformFailure, describe_failure
from bots.discord.settings import DiscordSettings
from bots.discord.stream import SEND_HINT, DiscordSurface
from core.model import (
    AgentEvent,
    AnswerNote,
    ApprovalDecided,
    ApprovalWaiting,
    CancelReason,
    Decision,
    Reply,
)
from core.turn import (
    STATUS_WAITING,
    STATUS_WORKING,
    DraftStream,
    LiveAnswer,
    QuietResponder,
    split_message,
    status_after,
)

__all__ = ["ALLOWED_MENTIONS", "MESSAGE_LIMIT", "DiscordResponder", "PlatformFailure", "describe_failure"]

log = logging.getLogger("chatlane.discord")

MESSAGE_LIMIT = 2000
"""Discord's limit on the characters of one message."""
TYPING_EVERY_S = 8.0
"""A typing indicator lasts about 10 s; refresh it before it lapses."""
TYPING_START_TIMEOUT_S = 3.0
"""The first indicator is awaited so it shows before the answer, but never for longer."""
REACT_HINT = "give the bot Add Reactions and Read Message History there"

ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True)
"""An agent's text never pings @everyone, roles or people; a reply pings its asker."""


class DiscordResponder(QuietResponder):
    """Answers one Discord message: typing while its turn runs, the reply in chunks."""

    def __init__(
        self,
        message: discord.Message | discord.PartialMessage | None,
        settings: DiscordSettings,
        me: discord.abc.Snowflake | None = None,
        *,
        channel: discord.abc.Messageable | None = None,
        answer: Sequence[discord.PartialMessage] = (),
    ) -> None:
        self.message = message
        """The message answered (None: the bot speaks first, in `channel`). `answer`: the
        messages a streamed answer continues in (see the module doc)."""
        if channel is None:
            if message is None:
                raise ValueError("a Discord responder needs a message or a channel")
            channel = message.channel
        self.channel = channel
        self.settings = settings
        self.me = me
        """The bot's user, whose status reactions are swapped (None: they are only added)."""
        self._surface: DiscordSurface | None = None
        draft = None
        if settings.stream == "edit":
            self._surface = DiscordSurface(channel, message, reply_to=settings.reply_to, answer=answer)
            draft = DraftStream(
                self._surface,
                limit=MESSAGE_LIMIT,
                interval_s=settings.stream_edit_interval_s,
                first_post_s=settings.stream_first_post_s,
                first_chars=settings.stream_first_chars,
            )
            if answer:
                draft.resume(len(answer))
        self.live = LiveAnswer(draft)
        self._question: discord.Message | None = None
        """The approval question this answer is waiting on, if any."""
        self._status: str | None = None
        """The status reaction the message carries now (`status_reactions`)."""

    @property
    def answer_ids(self) -> list[str]:
        """The messages the streamed answer shows in, in order."""
        return self._surface.ids if self._surface is not None else []

    def track_answer(self, note: AnswerNote) -> None:
        self.live.track(note)

    def _where(self) -> str:
        guild = getattr(self.channel, "guild", None)
        place = f" (guild {guild.id})" if guild is not None else ""
        return f"channel {getattr(self.channel, 'id', '?')}{place}"

    def _about(self) -> str:
        return f"message {self.message.id}" if self.message is not None else "a message of the bot's"

    async def on_delta(self, text: str) -> None:
        self.live.add(text)

    async def on_event(self, event: AgentEvent) -> None:
        if isinstance(event, ApprovalDecided) and self._question is not None:
            await approvals.show_decision(self._question, event)
            self._question = None
        self.live.event(event)

    async def ask_approval(self, waiting: ApprovalWaiting) -> Decision | None:
        """Post Approve / Deny buttons; the click (on any process) decides. Denied when
        the question cannot be posted (nobody could answer it)."""
        self._question = await approvals.ask(self.channel, waiting)
        return None if self._question is not None else "denied"

    async def on_cancelled(self, reason: CancelReason) -> None:
        await self.live.cancelled(reason)

    async def send(self, reply: Reply) -> None:
        await self._send(reply)
        await self._set_status(status_after(reply.kind))

    async def _send(self, reply: Reply) -> None:
        # "merged": the later message's reply answers this one too.
        if await self.live.deliver(reply) or reply.kind == "merged":
            return
        if reply.kind == "limited" and not reply.text:  # already told to slow down
            return
        chunks = [c for c in split_message(reply.text, MESSAGE_LIMIT) if c.strip()]
        if not chunks:
            log.warning("discord: empty %s for %s not sent", reply.kind, self._about())
            return
        for i, chunk in enumerate(chunks):
            try:
                if i == 0 and self.settings.reply_to and self.message is not None:
                    # A deleted original must not lose the answer: send it unthreaded then.
                    ref = self.message.to_reference(fail_if_not_exists=False)
                    await self.channel.send(chunk, reference=ref)
                else:
                    await self.channel.send(chunk)
            except PlatformFailure as exc:
                log.error(
                    "discord: could not send part %d/%d of the %s to %s in %s: %s",
                    i + 1,
                    len(chunks),
                    reply.kind,
                    self._about(),
                    self._where(),
                    describe_failure(exc, SEND_HINT),
                )
                return

    async def on_queued(self) -> None:
        if self.settings.status_reactions:
            await self._set_status(STATUS_WAITING)
        elif self.settings.ack_reaction:
            await self._react(self.settings.ack_reaction, add=True)

    async def _set_status(self, emoji: str | None) -> None:
        """Swap the status reaction (only with `status_reactions`)."""
        if not self.settings.status_reactions or emoji == self._status:
            return
        if self._status is not None and self.me is not None:
            await self._react(self._status, add=False)
        self._status = emoji
        if emoji is not None:
            await self._react(emoji, add=True)

    async def _react(self, emoji: str, *, add: bool) -> None:
        if self.message is None:
            return
        try:
            if add:
                await self.message.add_reaction(emoji)
            else:
                await self.message.remove_reaction(emoji, self.me or discord.Object(0))
        except PlatformFailure as exc:
            log.warning(
                "discord: could not %s reaction %s on %s in %s: %s",
                "add" if add else "remove",
                emoji,
                self._about(),
                self._where(),
                describe_failure(exc, REACT_HINT),
            )

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        await self._set_status(STATUS_WORKING)
        refresh: asyncio.Task[None] | None = None
        if await self._type(timeout=TYPING_START_TIMEOUT_S):
            refresh = asyncio.create_task(self._keep_typing(), name=f"typing {self._about()}")
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
                await self.channel.typing()
        except PlatformFailure as exc:
            log.warning(
                "discord: no typing indicator in %s: %s",
                self._where(),
                describe_failure(exc, "give the bot Send Messages there"),
            )
            return False
        return True
