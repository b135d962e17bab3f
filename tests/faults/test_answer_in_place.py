"""A streamed answer cut by a crash is finished in the messages it was streaming into, from
outside: real `chatlane run` processes (files store) against the fake Discord and the fake
Slack (which outlive them), killed with SIGKILL at the worst moments for the answer's
message ids:

  * right after the platform saw the answer's FIRST message, before any edit (the model
    streamed one piece, then hangs): the old way noted the message only on the next
    piece, so the next process posted a second copy;
  * after a long answer rolled into a second message (Discord: past 2,000 characters;
    Slack native streaming: a second stream past 4,000): the old way kept only the first
    message, so the next process left the old second part behind and posted another.

The first process's model hangs after `STALL_AFTER` pieces; the restarted process's model
answers whole. Afterwards the channel shows exactly one complete answer: its messages
read the answer's chunks, none left over, none twice. Each test prints what it counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bots.testing import ChatlaneProcess, SlowStreamAgent, eventually
from bots.testing.fake_discord import FakeDiscord
from bots.testing.fake_slack import BOT_USER, HUMAN, FakeSlack, event_callback, message_event
from core.turn import split_message

pytestmark = pytest.mark.slow

JSON = dict[str, Any]

ENV = {"DISCORD_BOT_TOKEN": "fake-token", "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test"}
PIECES, GAP_S = 20, 0.02
DISCORD_LIMIT, SLACK_LIMIT = 2000, 4000
ANSWERED = "turn=1 outcome=answered"
"""The restarted process's log line for r1's turn, written once its answer is delivered."""
STREAMING = "stream_edit_interval_s = 0.2\nstream_first_chars = 1\nstream_first_post_s = 0\n"
DISCORD = (
    '[discord]\nenabled = true\napi_base_url = "{api}"\ngateway_url = "{gateway}"\n'
    "guild_ready_timeout_s = 0.05\nsync_commands = false\nhistory_backfill = 0\n" + STREAMING
)
SLACK = (
    '[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{api}"\nstream = "{mode}"\n'
    "history_backfill = 0\n" + STREAMING
)


def config(tmp_path: Path, platform: str, *, words: int, stall_after: int | None) -> Path:
    """The config of one run: the same store and platform, the model of this run."""
    stall = f", stall_after = {stall_after}" if stall_after is not None else ""
    path = tmp_path / "chatlane.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "state"}"\n'
        '[agent]\nbackend = "python"\nfactory = "bots.testing.agents:slow_stream"\n'
        f"options = {{pieces = {PIECES}, gap_s = {GAP_S}, words = {words}{stall}}}\n"
        "[queue]\ndrain_s = 0\nadopt_every_s = 0.5\n[http]\nenabled = false\n"
        f"{platform}",
        encoding="utf-8",
    )
    return path


def answer(words: int) -> str:
    """What the agent answers to the one message ("r1", turn 1) with `words` words."""
    return SlowStreamAgent(PIECES, GAP_S, words=words).text_for(1, "r1")


@contextlib.asynccontextmanager
async def process(path: Path, log: Path) -> AsyncIterator[ChatlaneProcess]:
    child = await ChatlaneProcess.start(path, log, env=ENV, options=("--log-level", "DEBUG"))
    try:
        yield child
    finally:
        await child.stop()


async def until(check: Callable[[], bool], timeout: float = 20) -> None:
    await eventually(check, timeout=timeout, interval=0.02)


async def until_noted(child: ChatlaneProcess, ids: Callable[[], list[str]]) -> None:
    """Until the child logged that the store holds exactly the messages the platform shows
    (the ids the next process will rewrite)."""
    try:
        await until(lambda: f"answer messages {','.join(ids())} stored" in child.stderr())
    except TimeoutError:
        raise AssertionError(f"the store never held answer messages {ids()}") from None


# --------------------------------------------------------------------- Discord
async def discord_run(
    tmp_path: Path, fake: FakeDiscord, *, words: tuple[int, int], stall_after: int, parts: int
) -> tuple[list[str], int]:
    """r1 is answered with `words[0]` words by a model that hangs after `stall_after`
    pieces, once `parts` messages show and the store holds them; kill -9; a new process
    answers with `words[1]` words. The ids the first process posted, and their edits."""
    platform = DISCORD.format(api=fake.api_base, gateway=fake.gateway_url)
    channel = fake.channel_id

    def posted() -> list[str]:
        return [str(m["id"]) for m in fake.sent_to(channel)]

    path = config(tmp_path, platform, words=words[0], stall_after=stall_after)
    async with process(path, tmp_path / "first.log") as first:
        await fake.send_message("r1", mention=True)
        await until(lambda: len(posted()) >= parts)
        await until_noted(first, posted)
        before = posted()
        edits = sum(len(fake.edits_of(i)) for i in before)
        await first.kill()
    assert len(before) == parts, "the model hangs: nothing more was posted"
    path = config(tmp_path, platform, words=words[1], stall_after=None)
    async with process(path, tmp_path / "second.log") as second:
        await until(lambda: ANSWERED in second.stderr(), 30)  # logged once delivered
        assert await second.terminate() == 0
    return before, edits


def discord_figures(fake: FakeDiscord, before: list[str], edits: int, words: int) -> list[JSON]:
    sent = fake.sent_to(fake.channel_id)
    kept = [m for m in sent if not m.get("deleted")]
    chunks = split_message(answer(words), DISCORD_LIMIT)
    print(
        f"\ndiscord: killed after {len(before)} message(s), {edits} edit(s) of them; after the restart "
        f"{len(kept)} message(s) for {len(chunks)} part(s), {len(sent)} ever posted"
    )
    assert [m["content"] for m in kept] == chunks, "one complete answer, nothing left over"
    return sent


async def test_discord_kill_right_after_the_first_post_finishes_that_message(tmp_path: Path) -> None:
    fake = await FakeDiscord().start()
    try:
        before, edits = await discord_run(tmp_path, fake, words=(200, 200), stall_after=1, parts=1)
        sent = discord_figures(fake, before, edits, 200)
        assert edits == 0, "killed before any edit"
        assert [str(m["id"]) for m in sent] == before, "finished in that message, never a second copy"
    finally:
        await fake.close()


@pytest.mark.parametrize("again", ["same", "shorter"])
async def test_discord_kill_after_an_answer_rolled_into_a_second_message_rewrites_every_part(
    tmp_path: Path, again: str
) -> None:
    """`same`: the new answer needs the same two messages: both are edited. `shorter`: it
    fits one message: that one is edited and the old second part deleted."""
    words = (450, 450 if again == "same" else 60)
    fake = await FakeDiscord().start()
    try:
        before, edits = await discord_run(tmp_path, fake, words=words, stall_after=14, parts=2)
        sent = discord_figures(fake, before, edits, words[1])
        assert [str(m["id"]) for m in sent] == before, "rewritten in place, nothing posted again"
        deleted = [str(m["id"]) for m in sent if m.get("deleted")]
        assert deleted == ([] if again == "same" else before[1:])
    finally:
        await fake.close()


# ----------------------------------------------------------------------- Slack
async def slack_run(
    tmp_path: Path, fake: FakeSlack, mode: str, *, words: int, stall_after: int, parts: int
) -> tuple[list[str], int]:
    """As `discord_run`, on Slack (`mode`: native or edit streaming), the same answer twice."""
    platform = SLACK.format(api=fake.api_base, mode=mode)

    def posted() -> list[str]:
        return [m.ts for m in fake.messages]

    path = config(tmp_path, platform, words=words, stall_after=stall_after)
    async with process(path, tmp_path / "first.log") as first:
        await until(fake.ws_connected.is_set)
        event = message_event(f"<@{BOT_USER}> r1", kind="app_mention", user=HUMAN)
        await fake.push("events_api", event_callback(event))
        await until(lambda: len(posted()) >= parts)
        await until_noted(first, posted)
        before = posted()
        changes = sum(len(fake.ok_calls(m)) for m in ("chat.update", "chat.appendStream"))
        await first.kill()
    assert len(before) == parts, "the model hangs: nothing more was posted"
    path = config(tmp_path, platform, words=words, stall_after=None)
    chunks = split_message(answer(words), SLACK_LIMIT)
    async with process(path, tmp_path / "second.log") as second:
        await until(lambda: ANSWERED in second.stderr(), 30)  # logged once delivered
        assert await second.terminate() == 0
    kept = [m for m in fake.messages if not m.deleted]
    print(
        f"\nslack {mode}: killed after {len(before)} message(s), {changes} change(s) of them; after the "
        f"restart {len(kept)} message(s) for {len(chunks)} part(s), {len(fake.messages)} ever posted"
    )
    assert [m.text for m in kept] == chunks, "one complete answer, nothing left over"
    assert [m.ts for m in fake.messages][: len(before)] == before, "rewritten in place"
    assert all(m.thread_ts == event["ts"] for m in kept), "in the message's thread"
    return before, changes


@pytest.mark.parametrize("mode", ["native", "edit"])
async def test_slack_kill_right_after_the_first_post_finishes_that_message(tmp_path: Path, mode: str) -> None:
    fake = await FakeSlack().start()
    try:
        before, changes = await slack_run(tmp_path, fake, mode, words=200, stall_after=1, parts=1)
        assert changes == 0, "killed before the first message changed"
        assert [m.ts for m in fake.messages] == before, "finished in that message, never a second copy"
    finally:
        await fake.close()


async def test_slack_kill_after_a_native_stream_rolled_into_a_second_message_rewrites_every_part(
    tmp_path: Path,
) -> None:
    """Past 4,000 characters a native answer goes on in a second stream; the resumed answer
    (three messages long) edits both and posts only the third."""
    fake = await FakeSlack().start()
    try:
        await slack_run(tmp_path, fake, "native", words=1400, stall_after=9, parts=2)
        assert len(fake.messages) == 3 and not any(m.deleted for m in fake.messages)
    finally:
        await fake.close()
