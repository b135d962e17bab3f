"""Slack's side of a streamed answer: the `Surface`s (core/turn/streaming.py) a `DraftStream` drives.

`NativeSurface` uses Slack's own streaming (`chat.startStream` / `chat.appendStream` /
`chat.stopStream`) through slack-sdk's helper for it (`AsyncWebClient.chat_stream`,
an `AsyncChatStream`), one stream per message of the answer. Slack streams only into
threads, and an app without the feature answers `not_allowed`/`unknown_method` (and
the like): then this surface, and every later one of the service (`Poster`
remembers), falls back to `EditSurface`; `missing_recipient_team_id`/`_user_id` does the
same for that one conversation (channel): `chat.postMessage`, then `chat.update` at
the stream's bounded rate. A stream that stops working mid-way (e.g. expired on
Slack's side) is finished with `chat.update` of its message.

Rate limits: the client's `AsyncRateLimitErrorRetryHandler` waits out a 429 and
retries, which slows the stream; a call that still fails makes the stream back off.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_chat_stream import AsyncChatStream

if TYPE_CHECKING:
    from bots.slack.reply import Poster

log = logging.getLogger("chatlane.slack")

Failure = (SlackApiError, SlackRequestError, aiohttp.ClientError, TimeoutError)

NATIVE_REFUSALS = frozenset(
    {
        "not_allowed",
        "unknown_method",
        "method_not_supported_for_channel_type",
        "not_allowed_token_type",
        "missing_scope",
        "feature_not_enabled",
        "team_not_allowed",
        "invalid_arguments",
    }
)
"""Errors that mean "no native streaming here" rather than "this call failed"."""

RECIPIENT_REFUSALS = frozenset({"missing_recipient_team_id", "missing_recipient_user_id"})
"""Errors that mean "no native streaming in THIS conversation" (Slack cannot tell whom the
stream is for, e.g. no team for a shared or external channel): its answers stream by
editing from then on, while other conversations keep streaming natively."""


def error_code(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "unknown_error"))
    return f"{type(exc).__name__}: {exc}"


class EditSurface:
    """An answer as ordinary messages: posted, then edited in place (`chat.update`)."""

    append_only = False

    def __init__(
        self, poster: Poster, channel: str, thread_ts: str | None, *, sent: list[str] | None = None
    ) -> None:
        self.poster = poster
        self.channel = channel
        self.thread_ts = thread_ts
        self.sent: list[str] = list(sent or ())
        """The ts of each message, in order (`sent`: messages an earlier process posted)."""

    @property
    def ids(self) -> list[str]:
        return self.sent

    async def show(self, index: int, text: str, *, final: bool) -> bool:
        client = self.poster.client
        try:
            if index < len(self.sent):
                await client.chat_update(channel=self.channel, ts=self.sent[index], text=text)
            else:
                posted = await client.chat_postMessage(
                    channel=self.channel, text=text, thread_ts=self.thread_ts
                )
                self.sent.append(str(posted["ts"]))
        except Failure as exc:
            method = "chat.update" if index < len(self.sent) else "chat.postMessage"
            log.warning(
                "slack: %s of a streamed reply in %s failed: %s", method, self.channel, error_code(exc)
            )
            return False
        return True

    async def drop(self, index: int) -> bool:
        ts = self.sent[index]
        try:
            await self.poster.client.chat_delete(channel=self.channel, ts=ts)
        except Failure as exc:
            if error_code(exc) != "message_not_found":  # already gone: what was asked
                log.warning(
                    "slack: chat.delete of %s in %s failed (it is blanked): %s",
                    ts,
                    self.channel,
                    error_code(exc),
                )
                return False  # kept: the stream blanks it
        del self.sent[index]
        return True


class NativeSurface:
    """An answer as Slack native streams in a thread, one per message; see the module doc."""

    def __init__(self, poster: Poster, channel: str, thread_ts: str, *, user: str, team: str | None) -> None:
        self.poster = poster
        self.channel = channel
        self.thread_ts = thread_ts
        self.user = user
        self.team = team
        self.streams: list[AsyncChatStream | None] = []
        """Per message: its open stream, or None once stopped (or broken: then edited)."""
        self.shown: list[str] = []
        self.fallback = EditSurface(poster, channel, thread_ts)
        """Takes over when native streaming is refused; also holds every message's ts."""

    @property
    def ids(self) -> list[str]:
        return self.fallback.sent

    @property
    def refused(self) -> bool:
        """Native streaming is refused to this app, or in this conversation."""
        return self.poster.native_refused or self.channel in self.poster.native_refused_in

    @property
    def append_only(self) -> bool:
        return not self.refused

    async def show(self, index: int, text: str, *, final: bool) -> bool:
        if self.refused:
            return await self.fallback.show(index, text, final=final)
        if index == len(self.streams):
            return await self._start(index, text, final=final)
        stream, shown = self.streams[index], self.shown[index]
        if stream is None or not text.startswith(shown):
            return await self._replace(index, text)
        try:
            if len(text) > len(shown):
                await stream.append(markdown_text=text[len(shown) :])
            if final:
                await stream.stop()
                self.streams[index] = None
        except Failure as exc:
            log.warning(
                "slack: streaming into %s failed (%s); editing it instead", self.channel, error_code(exc)
            )
            return await self._replace(index, text)
        self.shown[index] = text
        return True

    async def drop(self, index: int) -> bool:
        if index < len(self.streams):
            await self._stop(index)
        if not await self.fallback.drop(index):
            return False  # kept (its stream stopped): `show` blanks it by an edit
        if index < len(self.streams):
            del self.streams[index], self.shown[index]
        return True

    async def _start(self, index: int, text: str, *, final: bool) -> bool:
        client = self.poster.client
        kwargs = {"recipient_team_id": self.team} if self.team else {}
        stream = await client.chat_stream(
            channel=self.channel,
            thread_ts=self.thread_ts,
            recipient_user_id=self.user,
            buffer_size=1,  # DraftStream decides when to call: at its bounded rate
            **kwargs,
        )
        try:
            await stream.append(markdown_text=text)
            if final:
                await stream.stop()
        except Failure as exc:
            code = error_code(exc)
            if stream.ts is None and code in NATIVE_REFUSALS:
                log.warning(
                    "slack: native streaming refused (%s); answers stream by editing messages instead", code
                )
                self.poster.native_refused = True
                return await self.fallback.show(index, text, final=final)
            if stream.ts is None and code in RECIPIENT_REFUSALS:
                log.warning(
                    "slack: native streaming refused in %s (%s); its answers stream by editing instead",
                    self.channel,
                    code,
                )
                self.poster.native_refused_in.add(self.channel)
                return await self.fallback.show(index, text, final=final)
            log.warning("slack: chat.startStream in %s failed: %s", self.channel, code)
            if stream.ts is None:
                return False
        self.streams.append(None if final else stream)
        self.shown.append(text)
        self.fallback.sent.append(str(stream.ts))
        return True

    async def _replace(self, index: int, text: str) -> bool:
        """Make message `index` read `text` by editing it (its stream is closed first)."""
        await self._stop(index)
        if not await self.fallback.show(index, text, final=True):
            return False
        self.shown[index] = text
        return True

    async def _stop(self, index: int) -> None:
        stream = self.streams[index]
        self.streams[index] = None
        if stream is None:
            return
        try:
            await stream.stop()
        except Failure as exc:
            log.debug("slack: chat.stopStream in %s failed: %s", self.channel, error_code(exc))
