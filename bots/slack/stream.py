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

Tool progress (bots/slack/progress.py) goes into the live message too: a tool event
before any text opens the stream (in `plan` task display) with the plan's title and the
call's task card, and the answer's text then streams into that same message; an event
while text streams adds to that message's stream (a stream opened for text shows task
cards in Slack's default `timeline` display, without a plan title). Every stream stops
with its plan's condensed title and no task left open. Where Slack refuses task chunks
(any error but a transient one), `progress` says so and the conversation shows tool
progress as the thread's status from then on (`Poster.tasks_refused_in`).

Rate limits: the client's `AsyncRateLimitErrorRetryHandler` waits out a 429 and
retries, which slows the stream; a call that still fails makes the stream back off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.models.messages.chunk import Chunk, TaskUpdateChunk
from slack_sdk.web.async_chat_stream import AsyncChatStream

from bots.slack.progress import MAX_TASKS, OPEN, closed, title

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

TRANSIENT = frozenset(
    {
        "ratelimited",
        "message_not_found",
        "message_not_in_streaming_state",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
"""Errors of a call with task chunks that say nothing about whether Slack takes them."""


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
        self.tasks: list[dict[str, TaskUpdateChunk]] = []
        """Per message: its task cards by call id, as last sent."""
        self.plans: list[bool] = []
        """Per message: its stream shows tasks as one plan (it was opened for tool progress)."""
        self.summary = ""
        """The condensed tool line a plan's title ends with."""
        self.fallback = EditSurface(poster, channel, thread_ts)
        """Takes over when native streaming is refused; also holds every message's ts."""
        self._lock = asyncio.Lock()
        """One call at a time: the draft's flusher and tool progress share the streams."""

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
        async with self._lock:
            return await self._show(index, text, final=final)

    async def drop(self, index: int) -> bool:
        async with self._lock:
            if index < len(self.streams):
                await self._stop(index)
            if not await self.fallback.drop(index):
                return False  # kept (its stream stopped): `show` blanks it by an edit
            if index < len(self.streams):
                del self.streams[index], self.shown[index], self.tasks[index], self.plans[index]
            return True

    async def progress(self, line: str, task: TaskUpdateChunk | None, summary: str) -> bool:
        """Show a tool event in the live message: `line` as its plan's title, `task` as a
        card. False when Slack streams nothing here or refused task chunks in this
        conversation: the caller shows the line another way."""
        async with self._lock:
            if self.refused or self.channel in self.poster.tasks_refused_in:
                return False
            self.summary = summary
            index = len(self.streams) - 1
            if index < 0 or self.streams[index] is None:
                return await self._open(line, task)
            chunks: list[Chunk] = [title(line)] if self.plans[index] else []
            cards = self.tasks[index]
            if task is not None and (task.id in cards or len(cards) < MAX_TASKS):
                chunks.append(task)
            if not chunks:
                return True  # a timeline shows no title, only cards
            stream = self.streams[index]
            assert stream is not None
            try:
                await stream.append(chunks=chunks)
            except Failure as exc:
                return self._refused(exc)
            if task is not None and chunks[-1] is task:
                cards[task.id] = task
            return True

    async def adopt(self, parts: list[str]) -> bool:
        """Put an answer the draft never showed (it came before the first flush) into the
        message tool progress opened, `parts` being its chunks; False when there is no such
        message (the caller posts the answer)."""
        async with self._lock:
            if self.refused or len(self.streams) != 1 or self.streams[0] is None or self.shown[0]:
                return False
            for index, part in enumerate(parts):
                if not await self._show(index, part, final=True):
                    if index == 0:
                        return False
                    log.error("slack: part %d of an answer in %s was not delivered", index + 1, self.channel)
                    break
            return True

    async def settle(self) -> None:
        """Stop every stream still open (one tool progress opened and no text went into),
        its plan condensed and its tasks closed."""
        async with self._lock:
            for index in range(len(self.streams)):
                await self._stop(index)

    async def _show(self, index: int, text: str, *, final: bool) -> bool:
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
                await stream.stop(chunks=self._closing(index))
                self.streams[index] = None
        except Failure as exc:
            log.warning(
                "slack: streaming into %s failed (%s); editing it instead", self.channel, error_code(exc)
            )
            return await self._replace(index, text)
        self.shown[index] = text
        return True

    async def _new_stream(self, *, plan: bool) -> AsyncChatStream:
        kwargs: dict[str, Any] = {"recipient_team_id": self.team} if self.team else {}
        if plan:
            kwargs["task_display_mode"] = "plan"
        return await self.poster.client.chat_stream(
            channel=self.channel,
            thread_ts=self.thread_ts,
            recipient_user_id=self.user,
            buffer_size=1,  # DraftStream decides when to call: at its bounded rate
            **kwargs,
        )

    async def _open(self, line: str, task: TaskUpdateChunk | None) -> bool:
        """A new message for tool progress: its stream starts with the plan's title and card."""
        stream = await self._new_stream(plan=True)
        try:
            await stream.append(chunks=[title(line)] + ([task] if task is not None else []))
        except Failure as exc:
            code = error_code(exc)
            if code in RECIPIENT_REFUSALS:
                log.warning(
                    "slack: native streaming refused in %s (%s); its answers stream by editing instead",
                    self.channel,
                    code,
                )
                self.poster.native_refused_in.add(self.channel)
                return False
            return self._refused(exc)
        self.streams.append(stream)
        self.shown.append("")
        self.tasks.append({task.id: task} if task is not None else {})
        self.plans.append(True)
        self.fallback.sent.append(str(stream.ts))
        return True

    def _refused(self, exc: BaseException) -> bool:
        """A call with task chunks failed: False (and remembered for this conversation) when
        Slack refused them, True when it was transient (the next event tries again)."""
        code = error_code(exc)
        if not isinstance(exc, SlackApiError) or code in TRANSIENT:
            log.warning("slack: tool progress in %s not shown: %s", self.channel, code)
            return True
        log.warning(
            "slack: task updates refused in %s (%s); tool progress shows as the thread's status instead",
            self.channel,
            code,
        )
        self.poster.tasks_refused_in.add(self.channel)
        return False

    def _closing(self, index: int) -> list[Chunk] | None:
        """What message `index` stops with: its plan's condensed title, no task left open."""
        if index >= len(self.tasks):
            return None
        chunks: list[Chunk] = [title(self.summary)] if self.plans[index] and self.summary else []
        chunks += [closed(t) for t in self.tasks[index].values() if t.status in OPEN]
        return chunks or None

    async def _start(self, index: int, text: str, *, final: bool) -> bool:
        stream = await self._new_stream(plan=False)
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
        self.tasks.append({})
        self.plans.append(False)
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
            await stream.stop(chunks=self._closing(index))
        except Failure as exc:
            log.debug("slack: chat.stopStream in %s failed: %s", self.channel, error_code(exc))
