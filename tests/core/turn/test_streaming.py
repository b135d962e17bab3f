"""`DraftStream` against recording surfaces (fakes at the platform boundary): however the
answer is cut into pieces, the messages end up exactly as a non-streamed reply's, and an
append-only surface is only ever asked to extend what it shows while the answer streams."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from bots.testing import eventually
from core.turn.chunking import FENCE, open_fence, split_message
from core.turn.streaming import BLANK_PART, DraftStream

LIMITS = st.integers(min_value=48, max_value=160)
TEXTS = st.lists(
    st.sampled_from(["word ", "longerword", "\n", "```py\n", "```\n", "`", " ", "x" * 30, "é"]),
    max_size=80,
).map("".join)


_ids = itertools.count(1)


class EditSurface:
    """Messages that can be posted, edited and deleted."""

    append_only = False

    def __init__(self, limit: int, *, ids: Sequence[str] = ()) -> None:
        self.limit = limit
        self.messages: list[str] = ["(earlier)"] * len(ids)
        self.ids: list[str] = list(ids)
        """Each message's id (`ids`: messages a process that died posted)."""
        self.calls = 0
        self.bad: list[str] = []
        """Blank or over-long messages asked for."""
        self.log: list[str] = []
        """What happened, in order: `post <id>`, `edit <id>`, `drop <id>` (and the stream's
        reports, when a test adds them)."""
        self.refuse_drops = False

    async def show(self, index: int, text: str, *, final: bool) -> bool:
        self.calls += 1
        if not text.strip() or len(text) > self.limit:
            self.bad.append(text)  # recorded: the stream's flusher task makes these calls
        if index == len(self.messages):
            self.messages.append(text)
            self.ids.append(f"m{next(_ids)}")
            self.log.append(f"post {self.ids[-1]}")
        else:
            self.messages[index] = text
            self.log.append(f"edit {self.ids[index]}")
        return True

    async def drop(self, index: int) -> bool:
        if self.refuse_drops:
            self.log.append(f"refused drop {self.ids[index]}")
            return False
        self.log.append(f"drop {self.ids[index]}")
        del self.messages[index], self.ids[index]
        return True


class AppendSurface(EditSurface):
    """Messages that only grow while streaming (Slack native streams); a different text is
    accepted only in the final flush (the surface's correction by an edit)."""

    append_only = True

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.sealed: set[int] = set()
        self.finishing = False
        self.violations: list[str] = []
        """Recorded, not raised: the stream's flusher task makes these calls."""

    async def show(self, index: int, text: str, *, final: bool) -> bool:
        if index < len(self.messages):
            grows = text.startswith(self.messages[index])
            if not self.finishing and (not grows or index in self.sealed):
                self.violations.append(f"message {index} changed while streaming: {text!r}")
        elif index > 0 and index - 1 not in self.sealed:
            self.violations.append(f"message {index} posted before message {index - 1} was final")
        if final:
            self.sealed.add(index)
        return await super().show(index, text, final=final)


async def stream(surface: EditSurface, text: str, cuts: list[int], limit: int) -> DraftStream:
    draft = DraftStream(surface, limit=limit, interval_s=0.0005, first_post_s=0, first_chars=1)
    pos = 0
    for cut in sorted(c % (len(text) + 1) for c in cuts):
        draft.add(text[pos:cut])
        pos = cut
        # Varies how pieces and flushes interleave; nothing waits on it (not a sync).
        await asyncio.sleep(0.001)
    draft.add(text[pos:])
    # An editable surface shows any answer that is not blank (platforms refuse blank
    # messages); an append-only one only what can no longer change, so maybe nothing yet.
    if text.strip() and not surface.append_only:
        await eventually(lambda: draft.shown)
    return draft


@settings(max_examples=60, deadline=None)
@given(text=TEXTS, cuts=st.lists(st.integers(min_value=0), max_size=12), limit=LIMITS)
def test_edited_messages_end_as_the_chunks_of_the_final_answer(
    text: str, cuts: list[int], limit: int
) -> None:
    async def run() -> None:
        surface = EditSurface(limit)
        draft = await stream(surface, text, cuts, limit)
        shown = await draft.finish(text)
        assert shown == bool(text.strip())
        assert surface.messages == (split_message(text, limit) if shown else [])
        assert surface.bad == []

    asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(text=TEXTS, cuts=st.lists(st.integers(min_value=0), max_size=12), limit=LIMITS)
def test_append_only_messages_only_grow_while_streaming_and_end_exact(
    text: str, cuts: list[int], limit: int
) -> None:
    async def run() -> None:
        surface = AppendSurface(limit)
        draft = await stream(surface, text, cuts, limit)
        surface.finishing = True
        shown = await draft.finish(text)  # False: nothing was shown, the caller sends it
        assert surface.messages == (split_message(text, limit) if shown else [])
        assert surface.violations == []

    asyncio.run(run())


@settings(max_examples=40, deadline=None)
@given(text=TEXTS.filter(str.strip), limit=LIMITS)
def test_a_marked_answer_ends_with_its_note_outside_any_code_block(text: str, limit: int) -> None:
    async def run() -> None:
        surface = EditSurface(limit)
        draft = await stream(surface, text, [len(text) // 2], limit)
        assert await draft.mark("_(stopped)_")
        last = surface.messages[-1]
        assert last.endswith("_(stopped)_")
        assert all(open_fence(m) is None for m in surface.messages), "fences balanced per message"
        assert all(len(m) <= limit for m in surface.messages)
        assert FENCE not in last.rsplit("\n", 1)[-1]

    asyncio.run(run())


def test_an_append_only_surface_shows_settled_words_while_streaming() -> None:
    async def run() -> None:
        surface = AppendSurface(100)
        draft = DraftStream(surface, limit=100, interval_s=0.0005, first_post_s=0, first_chars=1)
        draft.add("several settled words and one still gro")
        await eventually(lambda: surface.messages == ["several settled words and one still "])
        draft.add("wing")
        surface.finishing = True
        assert await draft.finish("several settled words and one still growing")
        assert surface.messages == ["several settled words and one still growing"]
        assert surface.violations == []

    asyncio.run(run())


def test_a_stream_with_nothing_shown_leaves_the_reply_to_the_caller() -> None:
    async def run() -> None:
        surface = EditSurface(100)
        draft = DraftStream(surface, limit=100, interval_s=0.5, first_post_s=5, first_chars=50)
        draft.add("short")
        assert await draft.finish("short") is False
        assert surface.calls == 0
        blank = DraftStream(surface, limit=100, interval_s=0.0005, first_post_s=0, first_chars=1)
        blank.add(" \n ")
        assert await blank.mark("_(stopped)_") is False  # nothing was shown: the caller says it
        assert surface.calls == 0

    asyncio.run(run())


class FlakySurface(EditSurface):
    """Refuses its first `fails` edits (a platform answering 429 past the client's patience)."""

    def __init__(self, limit: int, fails: int) -> None:
        super().__init__(limit)
        self.fails = fails
        self.times: list[tuple[float, bool]] = []

    async def show(self, index: int, text: str, *, final: bool) -> bool:
        refused = index < len(self.messages) and self.fails > 0
        self.times.append((asyncio.get_running_loop().time(), not refused))
        if refused:
            self.fails -= 1
            return False
        return await super().show(index, text, final=final)


def test_failed_calls_make_the_stream_back_off_and_no_text_is_lost() -> None:
    interval = 0.03

    async def run() -> None:
        surface = FlakySurface(500, fails=3)
        draft = DraftStream(surface, limit=500, interval_s=interval, first_post_s=0, first_chars=1)
        text = "".join(f"piece{i} " for i in range(40))
        for i in range(40):
            draft.add(f"piece{i} ")
            await asyncio.sleep(0.01)  # the agent's pace: pieces over time, not a sync
        assert await draft.finish(text)
        assert surface.messages == [text]
        gaps = [(b - a, ok) for (a, ok), (b, _) in itertools.pairwise(surface.times)]
        # After the 1st, 2nd and 3rd refusal the next try waits 2, 4 and 8 intervals.
        waits = [gap for gap, ok in gaps if not ok]
        assert len(waits) == 3
        assert [w >= interval * f * 0.95 for w, f in zip(waits, (2, 4, 8), strict=True)] == [True] * 3
        assert surface.times[-1][1], "the final edit went through"

    asyncio.run(run())


def test_finishing_an_answer_already_shown_whole_makes_no_call_and_does_not_wait() -> None:
    async def run() -> None:
        surface = EditSurface(500)
        draft = DraftStream(surface, limit=500, interval_s=30, first_post_s=0, first_chars=1)
        draft.add("all of it at once")
        await eventually(lambda: surface.messages == ["all of it at once"])
        calls = surface.calls
        async with asyncio.timeout(5):  # far below the 30 s interval a needless edit would wait
            assert await draft.finish("all of it at once")
        assert surface.calls == calls

    asyncio.run(run())


def reporting(surface: EditSurface, draft: DraftStream) -> list[tuple[str, ...]]:
    """What the stream reports (`on_messages`), also written into the surface's log."""
    reports: list[tuple[str, ...]] = []

    async def note(ids: tuple[str, ...]) -> None:
        surface.log.append(f"report {','.join(ids)}")
        reports.append(ids)

    draft.on_messages = note
    return reports


def test_each_posted_message_is_reported_before_the_next_call() -> None:
    """A message the stream posts is reported (core stores its id) before the stream makes
    any other platform call, so a crash after a post never loses track of it."""

    async def run() -> None:
        surface = EditSurface(60)
        draft = DraftStream(surface, limit=60, interval_s=0.0005, first_post_s=0, first_chars=1)
        reports = reporting(surface, draft)
        text = "".join(f"word{i} " for i in range(40))  # 280 characters: five messages
        for i in range(0, len(text), 7):
            draft.add(text[i : i + 7])
            await asyncio.sleep(0.001)  # the agent's pace, not a sync
        assert await draft.finish(text)
        assert len(surface.ids) >= 5
        assert reports == [tuple(surface.ids[:n]) for n in range(1, len(surface.ids) + 1)]
        posts = [i for i, entry in enumerate(surface.log) if entry.startswith("post")]
        assert all(surface.log[i + 1].startswith("report") for i in posts), surface.log

    asyncio.run(run())


def test_a_resumed_answer_rewrites_every_earlier_message_in_order_and_deletes_the_rest() -> None:
    """Three messages an earlier process posted; the new answer needs two: both are edited
    (never posted again), the third is deleted, and the list reported shrinks with it."""

    async def run() -> None:
        surface = EditSurface(60, ids=["a", "b", "c"])
        draft = DraftStream(surface, limit=60, interval_s=0.0005, first_post_s=0, first_chars=1)
        draft.resume(3)
        reports = reporting(surface, draft)
        text = "".join(f"word{i} " for i in range(12))  # 84 characters: two messages
        draft.add(text)
        assert await draft.finish(text)
        assert surface.ids == ["a", "b"] and surface.messages == split_message(text, 60)
        assert not any(entry.startswith("post") for entry in surface.log)
        assert surface.log.count("drop c") == 1 and reports[-1] == ("a", "b")

    asyncio.run(run())


def test_a_resumed_answer_longer_than_before_posts_only_past_the_earlier_messages() -> None:
    async def run() -> None:
        surface = EditSurface(60, ids=["a"])
        draft = DraftStream(surface, limit=60, interval_s=0.0005, first_post_s=0, first_chars=1)
        draft.resume(1)
        reports = reporting(surface, draft)
        text = "".join(f"word{i} " for i in range(20))  # 140 characters: three messages
        draft.add(text)
        assert await draft.finish(text)
        assert surface.ids[0] == "a" and len(surface.ids) == 3
        assert reports == [tuple(surface.ids[:2]), tuple(surface.ids)]
        assert surface.messages == split_message(text, 60)

    asyncio.run(run())


def test_a_surplus_message_the_platform_refuses_to_delete_is_blanked() -> None:
    async def run() -> None:
        surface = EditSurface(60, ids=["a", "b"])
        surface.refuse_drops = True
        draft = DraftStream(surface, limit=60, interval_s=0.0005, first_post_s=0, first_chars=1)
        draft.resume(2)
        draft.add("short now")
        assert await draft.finish("short now")
        assert surface.messages == ["short now", BLANK_PART]
        assert surface.log[-2:] == ["refused drop b", "edit b"]

    asyncio.run(run())
