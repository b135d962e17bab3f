"""Streamed answers on Slack: real slack-bolt / slack-sdk against the fake Slack, with a
slow streaming agent (60 pieces, 30 ms apart). Native streaming goes through
slack-sdk's own `chat_stream` helper; the fallback posts and edits."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from bots.testing import SlowStreamAgent
from bots.testing.fake_slack import DM, GENERAL, Fault, message_event
from core.turn.chunking import FENCE, split_message
from core.turn.streaming import CANCEL_MARKS, STOPPED_MARK
from tests.support.slack import Bot, mention, running, submitted

INTERVAL = 0.25
STREAMING = f"stream_edit_interval_s = {INTERVAL}\n"


async def idle(bot: Bot, taken: int = 1) -> None:
    """Until `taken` messages reached the gateway and every conversation is done."""
    async with asyncio.timeout(15):
        while submitted(bot) < taken or len(bot.runtime.gateway.lanes):
            await asyncio.sleep(0.02)


def fences_balanced(text: str) -> bool:
    return sum(1 for line in text.split("\n") if line.lstrip(" ").startswith(FENCE)) % 2 == 0


async def test_native_stream_appends_at_the_interval_and_ends_as_the_exact_answer(tmp_path: Path) -> None:
    agent = SlowStreamAgent(60, 0.03)
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
        event = mention("tell me")
        await bot.deliver(event)
        await idle(bot)
        fake = bot.fake
        assert fake.shown(GENERAL) == [agent.text_for(1, "tell me")]
        [start] = fake.ok_calls("chat.startStream")
        assert start.args["thread_ts"] == event["ts"] and start.args["recipient_user_id"]
        appends = fake.ok_calls("chat.appendStream")
        assert len(appends) >= 3, "the answer grew while the agent streamed"
        assert len(fake.ok_calls("chat.stopStream")) == 1
        assert not fake.calls_of("chat.postMessage") and not fake.calls_of("chat.update")
        times = [c.at for c in [start, *appends]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= INTERVAL * 0.95, gaps


@pytest.mark.parametrize("refusal", ["not_allowed", "unknown_method"])
async def test_refused_native_streaming_falls_back_to_post_and_update_and_is_not_tried_again(
    tmp_path: Path, refusal: str
) -> None:
    agent = SlowStreamAgent(60, 0.03)
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
        bot.fake.native_refusal = refusal
        await bot.deliver(mention("first"))
        await idle(bot)
        await bot.deliver(mention("second"))
        await idle(bot, 2)
        fake = bot.fake
        assert fake.shown(GENERAL) == [agent.text_for(1, "first"), agent.text_for(1, "second")]
        assert len(fake.calls_of("chat.startStream")) == 1, "refused once, remembered"
        assert len(fake.ok_calls("chat.update")) >= 4, "both answers grew by edits"


async def test_a_4500_character_native_stream_rolls_over_at_clean_boundaries_with_fences_balanced(
    tmp_path: Path,
) -> None:
    code = "\n".join(f"    line_{i} = compute({i})  # step" for i in range(60))
    body = "Intro paragraph. " * 120 + f"\n```python\n{code}\n```\n" + "Outro sentence here. " * 60
    agent = SlowStreamAgent(60, 0.03, body=body)
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
        await bot.deliver(mention("long one"))
        await idle(bot)
        expected = agent.text_for(1, "long one")
        assert len(expected) > 4500
        shown = bot.fake.shown(GENERAL)
        assert shown == split_message(expected, 4000), "the same messages a non-streamed reply sends"
        assert len(shown) == 2 and all(len(m) <= 4000 and fences_balanced(m) for m in shown)
        assert len(bot.fake.ok_calls("chat.stopStream")) == 2
        assert not bot.fake.calls_of("chat.update"), "append-only: nothing needed correcting"


async def test_a_4500_character_edit_stream_rolls_over_too(tmp_path: Path) -> None:
    agent = SlowStreamAgent(60, 0.03, body="word " * 900)
    async with running(tmp_path, "socket", agent=agent, stream="edit", slack=STREAMING) as bot:
        await bot.deliver(mention("long one"))
        await idle(bot)
        assert bot.fake.shown(GENERAL) == split_message(agent.text_for(1, "long one"), 4000)
        assert not bot.fake.calls_of("chat.startStream")


async def test_a_429_on_append_slows_the_stream_and_loses_no_text(tmp_path: Path) -> None:
    agent = SlowStreamAgent(60, 0.03)
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
        bot.fake.fail(Fault("chat.appendStream", "ratelimited", times=1, status=429, retry_after=1))
        await bot.deliver(mention("under pressure"))
        await idle(bot)
        assert [c.error for c in bot.fake.calls_of("chat.appendStream")].count("ratelimited") == 1
        assert bot.fake.shown(GENERAL) == [agent.text_for(1, "under pressure")]


async def test_stop_in_the_thread_marks_the_partial_and_confirms(tmp_path: Path) -> None:
    agent = SlowStreamAgent(60, 0.03)
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
        event = mention("go on and on")
        await bot.deliver(event)
        await bot.fake.wait_for(lambda: bot.fake.ok_calls("chat.startStream") or None)
        await bot.deliver(mention("/stop", thread_ts=event["ts"]))
        await idle(bot, 2)
        partial, confirmation = bot.fake.shown(GENERAL)
        assert partial.endswith(STOPPED_MARK)
        assert len(partial) < len(agent.text_for(1, "go on and on"))
        assert confirmation == "Stopped the answer in progress."


async def test_slash_stop_answers_for_the_channel_conversation(tmp_path: Path) -> None:
    agent = SlowStreamAgent(60, 0.03)
    extra = 'slash_command = "/chatlane"\n' + STREAMING
    async with running(tmp_path, "socket", agent=agent, stream="edit", slack=extra) as bot:
        await bot.deliver(message_event("in the DM", channel=DM))
        await bot.fake.wait_for(lambda: bot.fake.ok_calls("chat.postMessage") or None)
        told = await bot.command("stop", channel=DM)
        assert told.startswith("Stopped the answer in progress.")
        await idle(bot)
        [partial] = bot.fake.shown(DM)
        assert partial.endswith(STOPPED_MARK)


async def test_assistant_thread_shows_a_status_until_the_answer_shows(tmp_path: Path) -> None:
    agent = SlowStreamAgent(20, 0.03)
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
        await bot.deliver(message_event("help", channel=DM, thread_ts="1700000000.000001"))
        await idle(bot)
        statuses = [c.args["status"] for c in bot.fake.ok_calls("assistant.threads.setStatus")]
        assert statuses == ["is thinking…", ""]
        first_status = bot.fake.calls_of("assistant.threads.setStatus")[0].at
        assert first_status < bot.fake.ok_calls("chat.startStream")[0].at
        assert bot.fake.shown(DM) == [agent.text_for(1, "help")]


async def test_status_reactions_on_slack(tmp_path: Path) -> None:
    agent = SlowStreamAgent(20, 0.03)
    extra = STREAMING + "status_reactions = true\nrequire_mention = false\n"
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=extra) as bot:
        await bot.deliver(message_event("a", thread_ts="1700000000.000009"))
        second = message_event("b", thread_ts="1700000000.000009")
        await bot.deliver(second)
        await idle(bot, 2)
        trail = [
            (c.method, c.args["name"])
            for c in bot.fake.calls
            if c.method.startswith("reactions.") and c.args.get("timestamp") == second["ts"]
        ]
        assert trail == [
            ("reactions.add", "hourglass_flowing_sand"),
            ("reactions.remove", "hourglass_flowing_sand"),
            ("reactions.add", "eyes"),
            ("reactions.remove", "eyes"),
            ("reactions.add", "white_check_mark"),
        ]


async def test_rapid_followups_in_a_thread_each_stream_their_own_answer_in_order(tmp_path: Path) -> None:
    agent = SlowStreamAgent(20, 0.03)
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
        root = mention("one")
        await bot.deliver(root)
        for text in ("two", "three"):
            await bot.deliver(mention(text, thread_ts=root["ts"]))
        await idle(bot, 3)
        expected = [agent.text_for(n, said) for n, said in ((1, "one"), (2, "two"), (3, "three"))]
        assert bot.fake.shown(GENERAL) == expected
        assert len(bot.fake.ok_calls("chat.startStream")) == 3


async def test_interrupt_mid_native_stream_marks_the_partial_and_streams_the_merged_answer(
    tmp_path: Path,
) -> None:
    agent = SlowStreamAgent(60, 0.03)
    extra = STREAMING + '[queue]\nmode = "interrupt"'
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=extra) as bot:
        root = mention("first")
        await bot.deliver(root)
        await bot.fake.wait_for(lambda: bot.fake.ok_calls("chat.startStream") or None)
        await bot.deliver(mention("second", thread_ts=root["ts"]))
        await idle(bot, 2)
        partial, merged = bot.fake.shown(GENERAL)
        assert partial.endswith(CANCEL_MARKS["interrupted"])
        assert merged == agent.text_for(1, "first + second")


@pytest.mark.parametrize("missing", ["missing_recipient_team_id", "missing_recipient_user_id"])
async def test_a_missing_recipient_falls_back_to_edits_for_that_conversation(
    tmp_path: Path, missing: str
) -> None:
    """Before: every answer tried chat.startStream again (and failed twice per answer)."""
    agent = SlowStreamAgent(20, 0.02)
    async with running(tmp_path, "socket", agent=agent, stream="native", slack=STREAMING) as bot:
        fake = bot.fake
        fake.fail(Fault("chat.startStream", missing, times=100, channel=GENERAL))
        for n, text in enumerate(("first", "second"), start=1):
            await bot.deliver(mention(text))
            await idle(bot, n)
        await bot.deliver(message_event("in a DM", channel=DM, thread_ts="1700000000.000100"))
        await idle(bot, 3)
        assert fake.shown(GENERAL) == [agent.text_for(1, "first"), agent.text_for(1, "second")]
        tried = [c for c in fake.calls_of("chat.startStream") if c.args["channel"] == GENERAL]
        assert len(tried) == 1, "refused once for this conversation, remembered"
        assert len([c for c in fake.ok_calls("chat.update") if c.args["channel"] == GENERAL]) >= 2
        # Another conversation still streams natively.
        assert [c.args["channel"] for c in fake.ok_calls("chat.startStream")] == [DM]
