"""A streamed answer shown as live platform messages (Discord, Slack), platform-free.

`DraftStream` takes the answer's pieces as the agent produces them and keeps a few
platform messages in step with them through a `Surface` (the platform's calls):

* the first message is posted once there is something worth showing (`first_chars`
  characters, or `first_post_s` after the first piece), then edited as text arrives,
  at most once per `interval_s`: a flush never starts sooner than `interval_s` after
  the previous one started, and a failed call (a 429 that outlasted the client's own
  retry, a network error) doubles that interval until a call succeeds again. Text is
  never lost: every flush shows everything received so far.
* past the platform's limit the text rolls over into a new message. The cuts are the
  ones `chunking.chunk_message` makes for the whole text (clean boundaries, code
  fences closed and re-opened), so a chunk is *sealed* (final) once the text reaches
  `limit` characters past its start: no later text can move its cut.
* `finish(text)` shows exactly the chunks of `text` (the final answer, which may
  differ from the pieces: a merged answer), deleting messages it no longer needs, so
  the messages read the same as a non-streamed reply. `mark(note)` finishes with the
  text so far plus a visible note ("stopped", the failure message): a cut-off answer
  never looks finished.
* `on_messages` (set by the responder's `track_answer`) is told the ids of every message
  shown, in order, each time a message is posted or deleted, and awaited before the
  next platform call: core stores them with the inbox item, so a crash right after a
  post never leaves a message the next process does not know about.
* `resume(n)` continues an answer a process that died had begun: the n messages it
  posted (the `ReplyTarget.answer_ids`) count as shown with unknown text, so the new
  answer edits them in order from its first flush (posting more only past the n-th),
  and the final reply always rewrites them, deleting those it no longer needs (or
  blanking one whose delete the platform refused): no second copy, no cut-off or
  leftover part behind.

Surfaces that can only append (Slack's native streaming) see only text that is not
expected to change: sealed chunks whole, and the live chunk up to its last stable word
boundary, no further than 7/8 of the limit. The chunker prefers the last line break of
a window, so in rare texts (a long line ending in spaces and backticks, no later break)
its cut lands before what was streamed: then nothing more is appended to that answer
until the final flush, which corrects the message with an edit and posts the rest.

Concurrency: `add` never blocks the agent; one flusher task per stream makes the
calls, one at a time. `finish`/`mark` wait for a call in flight (never cancel one:
a cancelled post may or may not have reached the platform), then stop the flusher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from core.model import (
    AgentEvent,
    AnswerNote,
    ApprovalWaiting,
    CancelReason,
    Reply,
    ReplyKind,
    ToolFailed,
    ToolFinished,
    ToolStarted,
)
from core.turn.chunking import FENCE, chunk_message, open_fence

log = logging.getLogger("chatlane.streaming")

MAX_BACKOFF_S = 30.0
"""A failing platform is retried at least this often while text keeps coming."""
UNKNOWN_TEXT = "\x00"
"""What a resumed message is taken to show: no real text equals it, so it is always edited."""
BLANK_PART = "\u200b"
"""What a surplus message of an answer is edited to when the platform refuses to delete it:
a zero-width space, the closest to empty a platform accepts (it shows nothing)."""


class Surface(Protocol):
    """The platform calls for the messages of one streamed answer.

    Message `index` carries the index-th chunk. Every call swallows and logs its own
    platform failure and returns False; it never raises for one.
    """

    @property
    def append_only(self) -> bool:
        """True when a message can only grow (no edits of what it shows)."""
        ...

    async def show(self, index: int, text: str, *, final: bool) -> bool:
        """Make message `index` read `text`, posting it when it is new. `final`: its
        text will not change again (an append-only surface closes its stream)."""
        ...

    async def drop(self, index: int) -> bool:
        """Delete message `index` (a final answer that needs fewer messages); it is always
        the last one. False when the platform refused: the message is still there, still
        message `index`, and the stream blanks it (`show` with `BLANK_PART`)."""
        ...

    @property
    def ids(self) -> Sequence[str]:
        """The platform ids of the messages shown, in order (those a resume began with too)."""
        ...


class DraftStream:
    """One answer, streamed into messages of at most `limit` characters. See the module doc."""

    def __init__(
        self,
        surface: Surface,
        *,
        limit: int,
        interval_s: float,
        first_post_s: float = 1.0,
        first_chars: int = 24,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.surface = surface
        self.limit = limit
        self.interval_s = interval_s
        self.first_post_s = first_post_s
        self.first_chars = first_chars
        self._clock = clock
        self.text = ""
        self.status = ""
        """One line under the text while the answer is produced ("Using search…"); never
        part of the final answer. Not shown by append-only surfaces (it could not go away)."""
        self.closed = False
        """Finished or marked: later pieces are ignored."""
        self._shown: list[str] = []
        """What each message shows, as far as the platform confirmed."""
        self._sealed: list[bool] = []
        self._first_at: float | None = None
        self._last_flush = float("-inf")
        self._backoff = 1.0
        self._wake = asyncio.Event()
        self._calls = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self.on_messages: AnswerNote | None = None
        """Told the messages' ids each time one is posted or deleted (see the module doc)."""

    @property
    def shown(self) -> bool:
        """Some of the answer is visible on the platform."""
        return bool(self._shown)

    @property
    def messages(self) -> int:
        return len(self._shown)

    def add(self, piece: str) -> None:
        """One more piece of the answer; never waits for the platform."""
        if self.closed or not piece:
            return
        self.text += piece
        if self._flusher is None:
            self._first_at = self._clock()
            self._flusher = asyncio.create_task(self._run(), name="draft stream")
        self._wake.set()

    def set_status(self, line: str) -> None:
        """Show `line` under the answer (edited in place; "" removes it); never waits."""
        if self.closed or line == self.status or self.surface.append_only:
            return
        self.status = line
        if self._flusher is None:
            self._first_at = self._clock()
            self._flusher = asyncio.create_task(self._run(), name="draft stream")
        self._wake.set()

    def _view(self) -> str:
        """What the messages show while streaming: the text, then the status line."""
        if not self.status:
            return self.text
        return f"{self.text.rstrip()}\n\n_{self.status}_" if self.text.strip() else f"_{self.status}_"

    async def finish(self, text: str) -> bool:
        """Show exactly `text`; False (nothing done) when nothing had been shown yet, so the
        caller sends `text` the ordinary way."""
        await self._halt()
        if not self._shown:
            return False
        if self._differs(text):
            await self._pace()
            await self._flush(text, final=True)
        return True

    async def mark(self, note: str) -> bool:
        """Finish with what was shown so far plus `note` on its own line (outside any open
        code block); False when nothing had been shown."""
        text = self.text.rstrip()
        if open_fence(text) is not None:
            text += f"\n{FENCE}"
        return await self.finish(f"{text}\n\n{note}" if text else note)

    def resume(self, count: int = 1) -> None:
        """The answer goes into the `count` messages an earlier process posted for it (their
        text is unknown here): flushes edit them in order, starting with the first, and
        `finish`/`mark` always rewrite them, deleting those the answer no longer needs.
        Call before the first `add`."""
        if not self._shown and count > 0:
            self._shown, self._sealed = [UNKNOWN_TEXT] * count, [False] * count

    def restart(self) -> None:
        """The answer starts over (a fenced turn is answered again): the next pieces replace
        what was received so far, in the same messages."""
        self.text = ""

    async def close(self) -> None:
        """Stop without another call (shutdown of the adapter)."""
        await self._halt()

    # ------------------------------------------------------------------ flushing
    async def _halt(self) -> None:
        self.closed = True
        if self._flusher is None:
            return
        async with self._calls:  # a call in flight ends first
            self._flusher.cancel()
        (outcome,) = await asyncio.gather(self._flusher, return_exceptions=True)
        if isinstance(outcome, Exception):  # a surface that raised: a bug, not a platform failure
            log.error("streamed answer stopped updating", exc_info=outcome)

    async def _pace(self) -> None:
        """Wait until the next flush may start."""
        delay = self._last_flush + self.interval_s * self._backoff - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._shown:
                await self._first_wait()
                if not self._view().strip():
                    continue  # nothing to show yet (platforms refuse blank messages)
            await self._pace()
            async with self._calls:
                await self._flush(self._view(), final=False)

    async def _first_wait(self) -> None:
        """Until the text is worth a message: `first_chars`, or `first_post_s` after the first piece."""
        due = (self._first_at or self._clock()) + self.first_post_s
        while (
            len(self.text.strip()) < self.first_chars
            and not self.status
            and (left := due - self._clock()) > 0
        ):
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    def _targets(self, text: str, final: bool) -> list[tuple[str, bool]]:
        """(text, sealed) for each message `text` should be shown in now."""
        chunks = chunk_message(text, self.limit)
        if final:
            return [(c.text, True) for c in chunks]
        targets: list[tuple[str, bool]] = []
        for i, c in enumerate(chunks):
            sealed = i < len(chunks) - 1 and len(text) > c.start + self.limit
            if sealed or not self.surface.append_only:
                targets.append((c.text, sealed))
                continue
            # Append-only: only what can no longer change, and only the first live chunk.
            room = self.limit * 7 // 8 - len(c.opener)
            live = c.opener + text[c.start : _stable_end(text, c.start, c.start + room)]
            if live.strip():
                targets.append((live, False))
            break
        return targets

    def _differs(self, text: str) -> bool:
        """Whether showing `text` as final takes any call: a message to edit, post or delete,
        or (append-only) a stream to close."""
        targets = self._targets(text, final=True)
        if len(targets) != len(self._shown):
            return True
        return any(
            shown != target or (self.surface.append_only and not sealed)
            for shown, sealed, (target, _) in zip(self._shown, self._sealed, targets, strict=True)
        )

    async def _flush(self, text: str, *, final: bool) -> None:
        if not text.strip() and not final:
            return  # restarted, nothing new yet (platforms refuse blank messages)
        targets = self._targets(text, final)
        called = failed = False
        for i, (target, sealed) in enumerate(targets):
            if i < len(self._shown):
                # Sealing changes nothing for an editable message; a stream must be closed.
                closes = sealed and not self._sealed[i] and self.surface.append_only
                same = self._shown[i] == target and not closes
                if same or (self._sealed[i] and not final):
                    continue
                if self.surface.append_only and not final and not target.startswith(self._shown[i]):
                    break  # would need an edit: the final flush corrects it (and posts the rest)
            called = True
            if not await self.surface.show(i, target, final=sealed):
                failed = True
                if i >= len(self._shown):
                    break  # never post a later part before an earlier one exists
                continue
            if i < len(self._shown):
                self._shown[i], self._sealed[i] = target, sealed
            else:
                self._shown.append(target)
                self._sealed.append(sealed)
                await self._report()  # before anything more is shown
        if final:
            while len(self._shown) > len(targets):
                called = True
                last = len(self._shown) - 1
                if not await self.surface.drop(last):
                    # Never a leftover part: one that cannot go shows nothing.
                    await self.surface.show(last, BLANK_PART, final=True)
                self._shown.pop()
                self._sealed.pop()
                await self._report()
        if called:
            self._last_flush = self._clock()
            most = MAX_BACKOFF_S / max(self.interval_s, 0.001)
            self._backoff = min(self._backoff * 2, most) if failed else 1.0

    async def _report(self) -> None:
        """Tell `on_messages` the ids of the messages shown now; its failure is logged (a
        store error there is the caller's to log: this is a bug guard)."""
        if self.on_messages is None:
            return
        try:
            await self.on_messages(tuple(self.surface.ids))
        except Exception:
            log.exception("the messages of a streamed answer were not reported")


def _stable_end(text: str, start: int, stop: int) -> int:
    """Where an append-only message may stop showing `text[start:]` for now: after the
    last space or line break before `stop` that is followed by a character the chunker
    would not move its cut back over (not a space or backtick), so a later cut is very
    unlikely to land before it. `start` when there is none yet (a word may still grow)."""
    for k in range(min(stop, len(text) - 1) - 1, start - 1, -1):
        if text[k] in " \n" and text[k + 1] not in " `":
            return k + 1
    return start


STOPPED_MARK = "_(stopped)_"
CANCEL_MARKS: dict[str, str] = {
    "stopped": STOPPED_MARK,
    "interrupted": "_(interrupted: see the answer below)_",
    "shutdown": "_(paused: I'm restarting. I'll finish this answer right here in a moment.)_",
}
"""The note a cut-off streamed answer ends with, by why it was cut off. `shutdown`: the
message stays in the durable inbox and the next process rewrites this same message with
the whole answer (`DraftStream.resume`), so nobody is asked to send anything again."""
FAILURE_MARK = "⚠️ {text}"

STATUS_WAITING, STATUS_WORKING, STATUS_DONE, STATUS_FAILED = "⏳", "👀", "✅", "⚠️"
"""Status reactions (opt-in): waiting behind a running turn, being answered, answered, failed."""


def status_after(kind: ReplyKind) -> str | None:
    """The status reaction a message ends with once it got a reply of `kind` (None: none)."""
    if kind in ("answer", "merged", "notice"):
        return STATUS_DONE
    if kind in ("failure", "dropped", "shutdown"):
        return STATUS_FAILED
    return None  # stopped: neither answered nor failed


USING_TOOL = "🔧 Using {tool}…"
USED_TOOLS = "🔧 Used {tools} ({calls} calls)"
USED_TOOL = "🔧 Used {tools}"
WAITING_APPROVAL = "⏸️ Waiting for approval to use {tool}…"
TOOL_FAILED = "⚠️ {tool} did not work; going on without it…"


class ToolStatus:
    """The status line a run of tool events comes to: one line, replaced by each event."""

    def __init__(self) -> None:
        self.used: list[str] = []
        self.calls = 0

    def line(self, event: AgentEvent) -> str | None:
        """The new line (None: the event changes nothing shown)."""
        if isinstance(event, ToolStarted):
            return USING_TOOL.format(tool=event.tool)
        if isinstance(event, ApprovalWaiting):
            return WAITING_APPROVAL.format(tool=event.tool)
        if isinstance(event, ToolFinished):
            self.calls += 1
            if event.tool not in self.used:
                self.used.append(event.tool)
            names = ", ".join(self.used)
            if self.calls > 1:
                return USED_TOOLS.format(tools=names, calls=self.calls)
            return USED_TOOL.format(tools=names)
        if isinstance(event, ToolFailed):
            return TOOL_FAILED.format(tool=event.tool)
        return None


class LiveAnswer:
    """Which reply finishes a streamed answer, which marks it, and which the adapter sends
    the ordinary way: the same rules for every platform that streams.

    `deliver` returns True when the stream took care of `reply` (the adapter sends
    nothing more), False when the adapter must send it as usual (nothing was shown).
    """

    def __init__(self, draft: DraftStream | None) -> None:
        self.draft = draft
        self.tools = ToolStatus()

    def track(self, note: AnswerNote) -> None:
        """`Responder.track_answer`: the draft reports its messages to `note`."""
        if self.draft is not None:
            self.draft.on_messages = note

    def add(self, piece: str) -> None:
        if self.draft is not None:
            self.draft.add(piece)

    def event(self, event: AgentEvent) -> None:
        """A tool event: the one status line of the answer changes (edited in place)."""
        line = self.tools.line(event)
        if self.draft is not None and line is not None:
            self.draft.set_status(line)

    async def cancelled(self, reason: CancelReason) -> None:
        if self.draft is None:
            return
        if reason == "retry":
            self.draft.restart()
        else:
            await self.draft.mark(CANCEL_MARKS[reason])

    async def deliver(self, reply: Reply) -> bool:
        draft = self.draft
        if draft is None:
            return reply.kind == "merged"
        if reply.kind == "answer" and not draft.closed:
            return await draft.finish(reply.text)
        if draft.closed:  # already finished or marked: an answer after that is a new one
            return draft.shown and reply.kind != "answer"
        if reply.kind == "merged":
            await draft.mark(CANCEL_MARKS["interrupted"])
            return True
        note = STOPPED_MARK if reply.kind == "stopped" else FAILURE_MARK.format(text=reply.text)
        return await draft.mark(note)
