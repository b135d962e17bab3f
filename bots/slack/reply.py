"""Replies to Slack: chunked `chat.postMessage` in the conversation's thread, ack reactions.

Every Web API failure (`not_in_channel`, `channel_not_found`, rate limits that
outlast the client's retries, a network error) is logged here with what to do about
it and swallowed: one conversation's failure never reaches the gateway's lanes or
any other conversation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.chunking import split_message
from core.responders import QuietResponder
from core.types import Reply

log = logging.getLogger("chatlane.slack")

MESSAGE_LIMIT = 4_000
"""Slack truncates `text` far later (40,000), but renders long messages badly past this."""

HINTS = {
    "not_in_channel": "invite the bot to the channel with /invite",
    "channel_not_found": "the channel is gone or the bot cannot see it",
    "ratelimited": "Slack rate limit: retries were exhausted",
    "invalid_auth": "the bot token was revoked or is wrong",
    "token_revoked": "the bot token was revoked",
}


def _describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        error = str(exc.response.get("error", "unknown_error"))
        hint = HINTS.get(error)
        return f"{error} ({hint})" if hint else error
    return f"{type(exc).__name__}: {exc}"


class Poster:
    """The Web API calls replies need, each one logged rather than raised on failure."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, channel: str, text: str, thread_ts: str | None) -> bool:
        """Send `text` in chunks of at most 4,000 characters; False if any chunk failed."""
        for i, chunk in enumerate(split_message(text, MESSAGE_LIMIT)):
            try:
                if thread_ts is None:
                    await self.client.chat_postMessage(channel=channel, text=chunk)
                else:
                    await self.client.chat_postMessage(channel=channel, text=chunk, thread_ts=thread_ts)
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.error(
                    "slack: chat.postMessage to %s failed at chunk %d: %s; the reply was not delivered",
                    channel,
                    i + 1,
                    _describe(exc),
                )
                return False
        return True

    async def react(self, name: str, channel: str, ts: str, *, add: bool) -> None:
        try:
            if add:
                await self.client.reactions_add(name=name, channel=channel, timestamp=ts)
            else:
                await self.client.reactions_remove(name=name, channel=channel, timestamp=ts)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            # A missing reaction costs nothing; never fail a turn over it.
            log.warning(
                "slack: reaction %r on %s/%s not %s: %s",
                name,
                channel,
                ts,
                "added" if add else "removed",
                _describe(exc),
            )


class SlackResponder(QuietResponder):
    """Answers one Slack message; reacts with `reaction` while it waits or is answered."""

    def __init__(
        self, poster: Poster, channel: str, ts: str, thread_ts: str | None, reaction: str = ""
    ) -> None:
        self.poster = poster
        self.channel = channel
        self.ts = ts
        self.thread_ts = thread_ts
        self.reaction = reaction.strip(":")
        self._reacted = False
        self._working = False

    async def send(self, reply: Reply) -> None:
        # "merged": a later message's reply already answers this one; an empty
        # "limited" reply: the sender was already told to slow down.
        if reply.kind != "merged" and reply.text:
            await self.poster.post(self.channel, reply.text, self.thread_ts)
        if not self._working:
            await self._react(add=False)

    async def on_queued(self) -> None:
        await self._react(add=True)

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        await self._react(add=True)
        self._working = True
        try:
            yield
        finally:
            self._working = False
            await self._react(add=False)

    async def _react(self, *, add: bool) -> None:
        if not self.reaction or self._reacted == add:
            return
        self._reacted = add
        await self.poster.react(self.reaction, self.channel, self.ts, add=add)
