"""Slack reply targets: what the adapter stores for a message, and the responder a process
that never saw the event builds from it (real slack-sdk against the fake Slack). A stored
target answers in the message's thread; with `answer_ids` it rewrites those messages with
`chat.update` instead of posting again, also when they were native streams."""

from __future__ import annotations

from pathlib import Path

from bots.slack.inbound import read_message, reply_target
from bots.testing import eventually, reported
from bots.testing.fake_slack import DM, GENERAL, TEAM
from core.door import RecentSet, Seen
from core.model import Inbound, Reply, ReplyTarget, SessionKey, ToolStarted
from tests.support.slack import mention, running

STREAMING = "stream_edit_interval_s = 0.2\nstream_first_chars = 1\n"
KEY = SessionKey("agent:main:slack:u:c")


def through_json(target: ReplyTarget) -> ReplyTarget:
    return ReplyTarget.from_json(target.to_json())


async def test_a_channel_mention_target_names_the_thread_it_is_answered_in_and_the_team(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "socket") as bot:
        event = mention("hello")
        seen = read_message(event, bot.service.me, bot.service.settings, RecentSet(10), via_mention=True)
        assert isinstance(seen, Seen)
        target = reply_target(seen.inbound, TEAM)
        assert (target.platform, target.channel, target.thread) == ("slack", GENERAL, event["ts"])
        assert target.reply_to == event["ts"] and target.answer_ids == ()
        assert dict(target.extra) == {"team": TEAM, "user": event["user"]}


async def test_a_stored_target_answers_in_its_thread(tmp_path: Path) -> None:
    async with running(tmp_path, "socket") as bot:
        root = mention("hello")
        target = through_json(ReplyTarget("slack", GENERAL, root["ts"], root["ts"], extra=(("team", TEAM),)))
        responder = bot.runtime.gateway.targets.responder(target)
        await responder.send(Reply("the late answer", "answer", KEY))
        [post] = bot.fake.posts
        assert (post.args["channel"], post.args["thread_ts"], post.args["text"]) == (
            GENERAL,
            root["ts"],
            "the late answer",
        )


async def test_a_native_stream_cut_off_by_a_crash_is_rewritten_in_place_by_the_next_responder(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, "socket", stream="native", slack=STREAMING) as bot:
        fake, targets = bot.fake, bot.runtime.gateway.targets
        root = mention("hello")
        target = ReplyTarget("slack", GENERAL, root["ts"], root["ts"], extra=(("user", "U0HUMAN"),))
        first = targets.responder(target)
        ids = reported(first)
        await first.on_delta("Half an ans")
        await eventually(lambda: ids)
        assert [(m.ts,) for m in fake.messages] == ids and fake.messages[0].streaming
        assert not fake.ok_calls("chat.appendStream"), "reported before the stream went on"
        # The process died: the next one gets the target with the message's ts.
        resumed = ReplyTarget("slack", GENERAL, root["ts"], root["ts"], answer_ids=ids[-1])
        again = targets.responder(through_json(resumed))
        await again.on_delta("A whole")
        await eventually(lambda: fake.shown(GENERAL) == ["A whole"])
        await again.send(Reply("A whole new answer.", "answer", KEY))
        assert fake.shown(GENERAL) == ["A whole new answer."]
        assert len(fake.messages) == 1 and not fake.posts, "never a second copy"
        assert len(fake.ok_calls("chat.update")) >= 2


async def test_a_message_tool_progress_opens_before_any_text_is_reported_at_once(tmp_path: Path) -> None:
    """Native streaming: a tool's progress opens the answer's message before the model
    said anything; it is reported then (a crash while the tool runs must not leave it
    behind), and once more, unchanged, never: the text goes into the same message."""
    async with running(tmp_path, "socket", stream="native", slack=STREAMING) as bot:
        fake, targets = bot.fake, bot.runtime.gateway.targets
        root = mention("hello")
        target = ReplyTarget("slack", GENERAL, root["ts"], root["ts"], extra=(("user", "U0HUMAN"),))
        responder = targets.responder(target)
        ids = reported(responder)
        await responder.on_event(ToolStarted(call_id="c1", tool="lookup"))
        assert [m.ts for m in fake.messages] == [ts for (ts,) in ids]
        assert len(ids) == 1 and not fake.messages[0].text
        await responder.on_delta("Found it.")
        await responder.send(Reply("Found it.", "answer", KEY))
        assert fake.shown(GENERAL) == ["Found it."] and len(fake.messages) == 1
        assert set(ids) == {(fake.messages[0].ts,)}


async def test_an_answer_id_is_rewritten_even_when_the_new_answer_does_not_stream(tmp_path: Path) -> None:
    async with running(tmp_path, "socket", stream="edit", slack=STREAMING) as bot:
        fake, targets = bot.fake, bot.runtime.gateway.targets
        first = targets.responder(ReplyTarget("slack", DM, None, "1.1", extra=(("direct", "1"),)))
        ids = reported(first)
        await first.on_delta("Cut off mid-sen")
        await eventually(lambda: ids)
        again = targets.responder(ReplyTarget("slack", DM, None, "1.1", answer_ids=ids[-1]))
        await again.send(Reply("The answer, in one piece.", "answer", KEY))
        assert fake.shown(DM) == ["The answer, in one piece."]
        assert len(fake.posts) == 1


async def test_targets_are_registered_while_the_bot_runs(tmp_path: Path) -> None:
    async with running(tmp_path, "socket") as bot:
        targets = bot.runtime.gateway.targets
        assert targets.can_answer("slack")
        await bot.service.stop()
        assert not targets.can_answer("slack")


async def test_a_stored_message_is_gated_again_by_the_access_rules_of_now(tmp_path: Path) -> None:
    async with running(tmp_path, "socket", slack='allow_users = ["U0OTHER"]') as bot:
        targets = bot.runtime.gateway.targets

        def stored(user: str) -> Inbound:
            return Inbound("slack", user, GENERAL, "hi", "1.1", mentioned_bot=True, space=TEAM)

        assert targets.admits(stored("U0OTHER"))
        assert not targets.admits(stored("U0HUMAN"))
