"""A deploy and a crash in the middle of a conversation, seen from the chat: real
`chatlane run` processes against the fake Discord and the fake Slack (which outlive them),
a streaming agent of about 2 s per answer, the files store and a real redis-server.

One person sends three messages r1, r2, r3 in a row. While r1's answer streams, the
process is stopped (SIGTERM, a deploy) or killed (SIGKILL, a crash), and a new process
starts with the same config. The platform never redelivers anything. Afterwards:
  * each message has exactly one answer, complete, in order (turns 1, 2, 3 of ONE session),
    and the transcript holds each message and each answer once;
  * r1's answer is finished in the SAME platform message the first process began (edited
    in place): no second copy, nothing cut off;
  * no message the bot ever showed asked anyone to send anything again.
Each test prints what it counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from bots.testing import ChatlaneProcess, RedisServer, SlowStreamAgent, eventually, run_cli, unique_prefix
from bots.testing.fake_discord import FakeDiscord
from bots.testing.fake_slack import BOT_USER, GENERAL, HUMAN, FakeSlack, message_event
from core.conversation.lanes import INTERRUPTED_TEXT, SHUTDOWN_TEXT
from tests.support.redis import require_redis_server

pytestmark = pytest.mark.slow

Stop = Literal["sigterm", "kill"]
Store = Literal["files", "redis"]

PIECES, GAP_S = 20, 0.05
"""About 1 s per answer: long enough to stop a process in the middle of one."""
LEASE_S = 2
"""Redis: how long a killed process's turn lock and inbox lease outlive it."""
AGENT = SlowStreamAgent(PIECES, GAP_S)
"""The child's agent, built here only to know its answers (`text_for`)."""
ENV = {"DISCORD_BOT_TOKEN": "fake-token", "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test"}
WORDS = ["r1", "r2", "r3"]
RESEND = ("again", SHUTDOWN_TEXT, INTERRUPTED_TEXT)
"""What a message asking to resend contains (the old shutdown texts say "send it again")."""


@pytest.fixture(params=["files", "redis"])
def store_toml(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "files":
        return f'[store]\npath = "{tmp_path / "state"}"\n'
    require_redis_server()
    server: RedisServer = request.getfixturevalue("redis_server")
    return (
        f'[store]\nbackend = "redis"\nurl = "{server.url}"\nprefix = "{unique_prefix()}"\n'
        f"turn_lock_ttl_s = {LEASE_S}\n"
    )


def config(tmp_path: Path, store: str, platform: str, *, drain_s: float = 0, pieces: int = PIECES) -> Path:
    path = tmp_path / "chatlane.toml"
    path.write_text(
        f"{store}"
        '[agent]\nbackend = "python"\nfactory = "bots.testing.agents:slow_stream"\n'
        f"options = {{pieces = {pieces}, gap_s = {GAP_S}}}\n"
        # By default a deploy gives running turns no time: the answer is cut mid-stream.
        f"[queue]\ndrain_s = {drain_s}\nadopt_every_s = 0.5\n"
        "[http]\nenabled = false\n"
        f"{platform}"
        "stream_edit_interval_s = 0.2\nstream_first_chars = 1\nstream_first_post_s = 0\n",
        encoding="utf-8",
    )
    return path


@contextlib.asynccontextmanager
async def process(path: Path, log: Path) -> AsyncIterator[ChatlaneProcess]:
    child = await ChatlaneProcess.start(path, log, env=ENV)
    try:
        yield child
    finally:
        await child.stop()


async def stop(child: ChatlaneProcess, how: Stop) -> None:
    if how == "kill":
        await child.kill()
    else:
        assert await child.terminate() == 0, child.stderr()


async def transcript(path: Path) -> tuple[list[dict[str, object]], list[tuple[str, str]]]:
    """(`sessions list` rows, (role, content) of the one session's transcript)."""
    listed = await asyncio.to_thread(run_cli, "sessions", "list", "--json", "--config", str(path), env=ENV)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    records: list[tuple[str, str]] = []
    if len(rows) == 1:
        shown = await asyncio.to_thread(
            run_cli, "sessions", "show", str(rows[0]["key"]), "--json", "--config", str(path), env=ENV
        )
        assert shown.returncode == 0, shown.stderr
        records = [(r["role"], r["content"]) for r in json.loads(shown.stdout)["transcript"]]
    return rows, records


def backend(store_toml: str) -> str:
    return "redis" if 'backend = "redis"' in store_toml else "files"


def expected() -> list[str]:
    return [AGENT.text_for(turn, word) for turn, word in enumerate(WORDS, 1)]


def check_memory(rows: list[dict[str, object]], records: list[tuple[str, str]]) -> None:
    assert [r["turns"] for r in rows] == [3], f"one session with three turns: {rows}"
    said = [("user", w) for w in WORDS]
    answers = [("assistant", t) for t in expected()]
    assert records == [x for pair in zip(said, answers, strict=True) for x in pair]


@dataclass(slots=True)
class Figures:
    answers: list[int]
    """Answers shown per message (want 1 each)."""
    cut_off: int
    resend_asks: int
    first_message_kept: bool
    seconds_to_last_answer: float

    def print(self, what: str) -> None:
        print(
            f"\n{what}: answers per message {self.answers}, cut off {self.cut_off}, asked to resend "
            f"{self.resend_asks}, r1 finished in its first message {self.first_message_kept}, "
            f"restart to last answer {self.seconds_to_last_answer:.1f}s"
        )


async def until(check: Callable[[], bool], timeout: float) -> None:
    await eventually(check, timeout=timeout, interval=0.02)


# --------------------------------------------------------------------- Discord
def first_id(fake: FakeDiscord, channel: str) -> str:
    return str(fake.sent_to(channel)[0]["id"])


@pytest.mark.parametrize("how", ["sigterm", "kill"])
async def test_discord_deploy_or_crash_mid_answer_finishes_every_message_once_in_place(
    tmp_path: Path, store_toml: str, how: Stop
) -> None:
    fake = await FakeDiscord().start()
    try:
        path = config(
            tmp_path,
            store_toml,
            f'[discord]\nenabled = true\napi_base_url = "{fake.api_base}"\n'
            f'gateway_url = "{fake.gateway_url}"\nguild_ready_timeout_s = 0.05\nsync_commands = false\n'
            "history_backfill = 0\n",
        )
        channel = fake.channel_id
        async with process(path, tmp_path / "first.log") as first:
            asked = [await fake.send_message(w, mention=True) for w in WORDS]
            # r1's answer is on screen and has grown at least once: it streams.
            await until(
                lambda: bool(fake.sent_to(channel) and fake.edits_of(fake.sent_to(channel)[0]["id"])), 15
            )
            assert len(fake.sent_to(channel)) == 1, "stopped during r1's answer"
            r1_answer = fake.sent_to(channel)[0]["id"]
            await stop(first, how)
        restarted = time.monotonic()
        async with process(path, tmp_path / "second.log") as second:
            # r3 is answered last (one lane, in order): then everything is.
            await until(lambda: expected()[-1] in fake.shown_in(channel), 30)
            took = time.monotonic() - restarted
            assert await second.terminate() == 0  # a deploy with nothing left to drain
        sent = fake.sent_to(channel)
        bodies = [str((c.json or {}).get("content", "")) for c in fake.calls if c.method in ("POST", "PATCH")]
        figures = Figures(
            answers=[sum(1 for m in sent if m["content"] == t) for t in expected()],
            cut_off=sum(1 for m in sent if m["content"] not in expected()),
            resend_asks=sum(1 for b in bodies if any(r in b for r in RESEND)),
            first_message_kept=sent[0]["id"] == r1_answer,
            seconds_to_last_answer=took,
        )
        figures.print(f"discord, {how}, {backend(store_toml)}")
        assert fake.shown_in(channel) == expected()
        assert figures.answers == [1, 1, 1] and figures.cut_off == 0 and figures.resend_asks == 0
        assert figures.first_message_kept, "r1's answer was finished in the message the first process began"
        replied = [str(m["request"]["message_reference"]["message_id"]) for m in sent]
        assert replied == [m["id"] for m in asked], "each answer replies to its own message"
        check_memory(*await transcript(path))
    finally:
        await fake.close()


async def test_discord_a_message_sent_while_the_process_drains_is_answered_after_the_restart(
    tmp_path: Path,
) -> None:
    """Discord never sends a message again: one that arrives during the drain (the
    process still listens, finishing r1) must be kept, not refused, and answered next."""
    fake = await FakeDiscord().start()
    try:
        path = config(
            tmp_path,
            f'[store]\npath = "{tmp_path / "state"}"\n',
            f'[discord]\nenabled = true\napi_base_url = "{fake.api_base}"\n'
            f'gateway_url = "{fake.gateway_url}"\nguild_ready_timeout_s = 0.05\nsync_commands = false\n'
            "history_backfill = 0\n",
            drain_s=10,
            pieces=60,  # 3 s: the drain outlasts the moment r2 arrives
        )
        channel = fake.channel_id
        answers = [AGENT.text_for(1, "r1"), AGENT.text_for(2, "r2")]
        async with process(path, tmp_path / "first.log") as first:
            await fake.send_message("r1", mention=True)
            await until(lambda: bool(fake.sent_to(channel)), 15)
            first.proc.send_signal(signal.SIGTERM)
            await until(lambda: b"stopping: finishing in-flight turns" in first.log.read_bytes(), 10)
            await fake.send_message("r2", mention=True)
            # No second signal: that would cut the drain short.
            assert await asyncio.wait_for(first.proc.wait(), 30) == 0, first.stderr()
            drained = fake.shown_in(channel)
        async with process(path, tmp_path / "second.log") as second:
            await until(lambda: answers[-1] in fake.shown_in(channel), 30)
            assert await second.terminate() == 0
        shown = fake.shown_in(channel)
        print(f"\ndiscord, message during the drain: shown after it {len(drained)}, at the end {len(shown)}")
        assert drained == answers[:1], "r1 was finished during the drain"
        assert shown == answers, "r2, sent during the drain, was answered after the restart"
    finally:
        await fake.close()


# ----------------------------------------------------------------------- Slack
@pytest.mark.parametrize("how", ["sigterm", "kill"])
async def test_slack_deploy_or_crash_mid_answer_finishes_every_message_once_in_place(
    tmp_path: Path, store_toml: str, how: Stop
) -> None:
    fake = await FakeSlack().start()
    try:
        path = config(
            tmp_path,
            store_toml,
            f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{fake.api_base}"\n'
            'stream = "native"\nhistory_backfill = 0\n',
        )
        root = message_event("a thread of ours", user=HUMAN)["ts"]  # never sent to the bot

        def shown() -> list[str]:
            return fake.shown(GENERAL)

        async with process(path, tmp_path / "first.log") as first:
            await until(fake.ws_connected.is_set, 10)
            fake.ws_connected.clear()
            for w in WORDS:
                await fake.push("events_api", _callback(w, root))
            await until(lambda: bool(fake.messages and len(fake.ok_calls("chat.appendStream")) >= 2), 15)
            assert len(fake.messages) == 1, "stopped during r1's answer"
            r1_answer = fake.messages[0].ts
            await stop(first, how)
        restarted = time.monotonic()
        async with process(path, tmp_path / "second.log") as second:
            await until(lambda: expected()[-1] in shown(), 30)
            took = time.monotonic() - restarted
            assert await second.terminate() == 0
        kept = [m for m in fake.messages if not m.deleted]
        bodies = [str(c.args.get("text") or c.args.get("markdown_text") or "") for c in fake.calls]
        figures = Figures(
            answers=[sum(1 for m in kept if m.text == t) for t in expected()],
            cut_off=sum(1 for m in kept if m.text not in expected()),
            resend_asks=sum(1 for b in bodies if any(r in b for r in RESEND)),
            first_message_kept=kept[0].ts == r1_answer,
            seconds_to_last_answer=took,
        )
        figures.print(f"slack, {how}, {backend(store_toml)}")
        assert shown() == expected()
        assert figures.answers == [1, 1, 1] and figures.cut_off == 0 and figures.resend_asks == 0
        assert figures.first_message_kept, "r1's answer was finished in the message the first process began"
        assert all(m.thread_ts == root for m in kept), "every answer in the thread"
        check_memory(*await transcript(path))
    finally:
        # Shown with a failure: what each message reads and every chat.* call made.
        print("messages:", [(m.ts, m.text[:40], m.updates, m.deleted) for m in fake.messages])
        print(
            "calls:", [(c.method, c.args.get("ts"), c.error) for c in fake.calls if c.method[:5] == "chat."]
        )
        await fake.close()


def _callback(word: str, thread: str) -> dict[str, object]:
    from bots.testing.fake_slack import event_callback

    event = message_event(f"<@{BOT_USER}> {word}", kind="app_mention", thread_ts=thread)
    return event_callback(event)
