"""Replies to Slack: streamed or chunked messages in the conversation's thread, reactions.

With `stream = "native"` (the default) an answer in a thread streams through Slack's
own streaming methods, elsewhere (top-level DMs, or where Slack refuses them) and with
`stream = "edit"` it is posted early and edited in place (bots/slack/stream.py), at
most once per `stream_edit_interval_s`, rolling over at 4,000 characters; the last
update is exactly the answer. In an assistant thread (a DM thread) the thread's status
(`assistant.threads.setStatus`) says the bot is working until text shows; elsewhere
the `ack_reaction` does. `status_reactions` adds ⏳ / 👀 / ✅ / ⚠️ to the asker's message.

While tools run, an edited answer shows one status line (core's `DraftStream`); a
natively streamed one shows Slack's task display in the same message instead
(bots/slack/progress.py), or, where Slack refuses task chunks, the line as the thread's
status (`assistant.threads.setStatus`), cleared when the answer is final. Never a
message per tool call.

A responder needs only ids (channel, ts, thread_ts), so one is made for a stored
`ReplyTarget` too (bots/slack/targets.py). With `answer_ids` (the messages a process that
died had begun the answer in) the answer continues in those messages, rewritten from
the start with `chat.update` (a native stream cannot be reopened by another process),
surplus ones deleted. The ts of each message a streamed answer posts (natively or not)
is reported to core (`track_answer`) as soon as Slack returns it, and stored before the
answer goes on.

Every Web API failure (`not_in_channel`, `channel_not_found`, rate limits that
outlast the client's retries, a network error) is logged here with what to do about
it and swallowed: one conversation's failure never reaches the gateway's lanes or
any other conversation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack import approvals
from bots.slack.progress import ToolProgress
from bots.slack.settings import SlackSettings
from bots.slack.stream import EditSurface, NativeSurface
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
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_WAITING,
    STATUS_WORKING,
    DraftStream,
    LiveAnswer,
    QuietResponder,
    split_message,
    status_after,
)

log = logging.getLogger("chatlane.slack")

MESSAGE_LIMIT = 4_000
"""Slack truncates `text` far later (40,000), but renders long messages badly past this."""

WORKING_STATUS = "is thinking…"
"""The assistant thread's status while nothing of the answer shows yet."""
STATUS_NAMES = {
    STATUS_WAITING: "hourglass_flowing_sand",
    STATUS_WORKING: "eyes",
    STATUS_DONE: "white_check_mark",
    STATUS_FAILED: "warning",
}
"""Status reactions by their Slack names."""

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
        self.native_refused = False
        """Slack refused native streaming once: this app streams by editing from then on."""
        self.native_refused_in: set[str] = set()
        """Channels where Slack could not stream (no recipient team/user): edits there."""
        self.status_refused = False
        """Slack refused assistant.threads.setStatus once: the ack reaction shows work instead."""
        self.tasks_refused_in: set[str] = set()
        """Channels where Slack refused task chunks: tool progress shows as the thread's status."""
        self.status_refused_in: set[str] = set()
        """Channels where Slack refused a tool status line as the thread's status."""

    async def set_status(self, channel: str, thread_ts: str, status: str, *, here_only: bool = False) -> bool:
        """An assistant thread's status line ("" clears it); False when Slack refused.
        `here_only`: a refusal is remembered for this channel only (not tried there again)."""
        if status and here_only and (self.status_refused or channel in self.status_refused_in):
            return False
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=channel, thread_ts=thread_ts, status=status
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            if here_only:
                log.info("slack: no thread status in %s (%s)", channel, _describe(exc))
                self.status_refused_in.add(channel)
                return False
            log.info("slack: no assistant status in %s (%s); using reactions", channel, _describe(exc))
            self.status_refused = True
            return False
        return True

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
    """Answers one Slack message; see the module doc for streaming and reactions."""

    def __init__(
        self,
        poster: Poster,
        channel: str,
        ts: str,
        thread_ts: str | None,
        reaction: str = "",
        *,
        settings: SlackSettings | None = None,
        user: str = "",
        team: str | None = None,
        is_direct: bool = False,
        answer_ids: Sequence[str] = (),
    ) -> None:
        self.poster = poster
        self.channel = channel
        self.ts = ts
        self.thread_ts = thread_ts
        self.reaction = reaction.strip(":")
        self.settings = settings or SlackSettings(stream="off")
        self.is_direct = is_direct
        self._reacted = False
        self._working = False
        self._status: str | None = None
        self._question: str | None = None
        """The ts of the approval question this answer waits on, if any."""
        self._progress = ToolProgress()
        self._thread_status = False
        """A tool status line shows as the thread's status (cleared with the answer)."""
        self._note: AnswerNote | None = None
        draft = None
        s = self.settings
        self._surface: NativeSurface | EditSurface | None = None
        if s.stream != "off":
            if answer_ids:
                self._surface = EditSurface(poster, channel, thread_ts, sent=list(answer_ids))
            elif s.stream == "native" and thread_ts is not None:
                self._surface = NativeSurface(poster, channel, thread_ts, user=user, team=team)
            else:
                self._surface = EditSurface(poster, channel, thread_ts)
            draft = DraftStream(
                self._surface,
                limit=MESSAGE_LIMIT,
                interval_s=s.stream_edit_interval_s,
                first_post_s=s.stream_first_post_s,
                first_chars=s.stream_first_chars,
            )
            if answer_ids:
                draft.resume(len(answer_ids))
        self.live = LiveAnswer(draft)

    @property
    def answer_ids(self) -> list[str]:
        """The ts of each message the streamed answer shows in, in order."""
        return list(self._surface.ids) if self._surface is not None else []

    def track_answer(self, note: AnswerNote) -> None:
        self._note = note
        self.live.track(note)

    async def on_delta(self, text: str) -> None:
        self.live.add(text)

    async def on_event(self, event: AgentEvent) -> None:
        if isinstance(event, ApprovalDecided) and self._question is not None:
            await approvals.show_decision(self.poster.client, self.channel, self._question, event)
            self._question = None
        await self._show_progress(event)
        self.live.event(event)  # after: a surface that just fell back to edits shows the line

    async def _show_progress(self, event: AgentEvent) -> None:
        """A tool event in a natively streamed answer (edited answers show the line themselves)."""
        surface = self._surface
        if not isinstance(surface, NativeSurface) or surface.refused:
            return
        shown = self._progress.update(event)
        if shown is None:
            return
        line, task = shown
        before = len(surface.ids)
        done = await surface.progress(line, task, self._progress.summary)
        if len(surface.ids) != before and self._note is not None:
            # Tool progress opened the answer's message before any text: reported like a
            # post of the draft's, so a resumed answer rewrites it rather than leave it.
            await self._note(tuple(surface.ids))
        if done or surface.refused:
            return
        if await self.poster.set_status(self.channel, surface.thread_ts, line, here_only=True):
            self._thread_status = True

    async def ask_approval(self, waiting: ApprovalWaiting) -> Decision | None:
        """Post Approve / Deny buttons in the conversation's thread; the click (on any
        process) decides. Denied when the question cannot be posted."""
        self._question = await approvals.ask(self.poster.client, self.channel, self.thread_ts, waiting)
        return None if self._question is not None else "denied"

    async def on_cancelled(self, reason: CancelReason) -> None:
        await self.live.cancelled(reason)

    async def send(self, reply: Reply) -> None:
        # "merged": a later message's reply already answers this one; an empty
        # "limited" reply: the sender was already told to slow down.
        if not await self.live.deliver(reply) and reply.kind != "merged" and reply.text:
            surface = self._surface  # tool progress may have opened the answer's message
            parts = split_message(reply.text, MESSAGE_LIMIT)
            if not (isinstance(surface, NativeSurface) and await surface.adopt(parts)):
                await self.poster.post(self.channel, reply.text, self.thread_ts)
        await self._settle()
        if not self._working:
            await self._react(add=False)
        await self._set_status(status_after(reply.kind))

    async def on_queued(self) -> None:
        if self.settings.status_reactions:
            await self._set_status(STATUS_WAITING)
        await self._react(add=True)

    @contextlib.asynccontextmanager
    async def working(self) -> AsyncIterator[None]:
        await self._set_status(STATUS_WORKING)
        status = self._assistant_thread() and await self.poster.set_status(
            self.channel, str(self.thread_ts), WORKING_STATUS
        )
        if not status:
            await self._react(add=True)
        self._working = True
        try:
            yield
        finally:
            self._working = False
            if status:  # Slack clears it on a reply too; say so when nothing was posted
                await self.poster.set_status(self.channel, str(self.thread_ts), "")
            await self._react(add=False)

    async def _settle(self) -> None:
        """The answer is final: tool progress condensed (native) or cleared (thread status)."""
        if isinstance(self._surface, NativeSurface):
            await self._surface.settle()
        if self._thread_status:
            self._thread_status = False
            await self.poster.set_status(self.channel, str(self.thread_ts), "", here_only=True)

    def _assistant_thread(self) -> bool:
        return (
            self.settings.stream != "off"
            and self.is_direct
            and self.thread_ts is not None
            and not self.poster.status_refused
        )

    async def _set_status(self, emoji: str | None) -> None:
        if not self.settings.status_reactions or emoji == self._status:
            return
        if self._status is not None:
            await self.poster.react(STATUS_NAMES[self._status], self.channel, self.ts, add=False)
        self._status = emoji
        if emoji is not None:
            await self.poster.react(STATUS_NAMES[emoji], self.channel, self.ts, add=True)

    async def _react(self, *, add: bool) -> None:
        """The simple `ack_reaction` (status reactions, when on, replace it)."""
        if not self.reaction or self.settings.status_reactions or self._reacted == add:
            return
        self._reacted = add
        await self.poster.react(self.reaction, self.channel, self.ts, add=add)
