"""Discord reply targets: what the adapter stores for a message, and the responder a
process that never saw the message builds from it (real discord.py against the fake
Discord). A stored target answers in the right channel or thread, as a reply to the right
message; with `answer_ids` it rewrites those messages in place instead of posting again."""

from __future__ import annotations

import time
import uuid

import discord

from bots.discord.inbound import reply_target
from bots.testing import eventually, reported
from bots.testing.fake_discord import FakeDiscord
from core.model import Inbound, InboxItem, Reply, ReplyTarget, SessionKey
from core.turn.streaming import CANCEL_MARKS
from tests.support.discord import Bot, StartBot

STREAMING = "stream_edit_interval_s = 0.2\nstream_first_chars = 1\n"
KEY = SessionKey("agent:main:discord:u:c")


async def received(bot: Bot, message_id: str) -> discord.Message:
    """The discord.py `Message` the bot's client got for a dispatched message."""
    client = bot.service.client
    assert client is not None

    def cached() -> discord.Message | None:
        return next((m for m in client.cached_messages if str(m.id) == message_id), None)

    await eventually(lambda: cached() is not None)
    found = cached()
    assert found is not None
    return found


def through_json(target: ReplyTarget) -> ReplyTarget:
    """What a process reading the stored target gets."""
    return ReplyTarget.from_json(target.to_json())


async def test_a_thread_message_target_names_the_thread_the_message_and_the_guild(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot()
    # Not addressed to the bot, so not answered: only what discord.py made of it counts here.
    sent = await fake.send_message("hello", channel=fake.thread_id)
    target = reply_target(await received(bot, sent["id"]))
    assert (target.platform, target.channel, target.thread) == ("discord", fake.thread_id, fake.thread_id)
    assert target.reply_to == sent["id"] and target.answer_ids == ()
    assert dict(target.extra) == {"guild": fake.guild_id, "parent": fake.channel_id}


async def test_a_stored_target_answers_in_its_thread_as_a_reply_to_its_message(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot()
    sent = await fake.send_message("hello", channel=fake.thread_id)  # not answered live
    target = through_json(reply_target(await received(bot, sent["id"])))
    responder = bot.runtime.gateway.targets.responder(target)
    await responder.send(Reply("the late answer", "answer", KEY))
    [answer] = fake.sent_to(fake.thread_id)
    assert answer["content"] == "the late answer"
    assert str(answer["request"]["message_reference"]["message_id"]) == sent["id"]
    assert not fake.sent_to(fake.channel_id)


async def test_a_streamed_answer_reports_each_message_the_moment_discord_returns_it(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    """Before any edit and before the next part is posted: a crash right after the
    first post must not leave a message core does not know about."""
    bot = await start_bot(STREAMING)
    target = ReplyTarget("discord", fake.channel_id, extra=(("guild", fake.guild_id),))
    responder = bot.runtime.gateway.targets.responder(target)
    seen: list[tuple[tuple[str, ...], int]] = []

    async def note(ids: tuple[str, ...]) -> None:
        seen.append((ids, len(fake.calls_to("PATCH", r"/channels/\d+/messages/\d+"))))

    responder.track_answer(note)
    await responder.on_delta("The first words of a long answer")
    [first] = await fake.wait_for_sent(fake.channel_id)
    await eventually(lambda: seen)
    assert seen == [((first["id"],), 0)], "reported once, before any edit"
    await responder.on_delta(" " + "and on " * 400)  # past 2,000 characters: a second message
    await responder.send(Reply("The first words of a long answer " + "and on " * 400, "answer", KEY))
    parts = fake.sent_to(fake.channel_id)
    assert len(parts) == 2
    assert [ids for ids, _ in seen] == [(parts[0]["id"],), (parts[0]["id"], parts[1]["id"])]


async def test_an_answer_id_makes_the_new_answer_rewrite_that_message_from_its_start(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot(STREAMING)
    sent = await fake.send_message("hello")  # not answered live: the responders below answer it
    targets = bot.runtime.gateway.targets
    # A first process streams half an answer, then dies (nothing marks it).
    first = targets.responder(ReplyTarget("discord", fake.channel_id, reply_to=sent["id"]))
    ids = reported(first)
    await first.on_delta("Half an ans")
    await eventually(lambda: ids)
    [(cut,)] = ids
    # The next process resumes it from the stored target.
    target = through_json(ReplyTarget("discord", fake.channel_id, reply_to=sent["id"], answer_ids=(cut,)))
    again = targets.responder(target)
    await again.on_delta("A whole")
    await eventually(lambda: fake.shown_in(fake.channel_id) == ["A whole"])
    await again.on_delta(" new answer.")
    await again.send(Reply("A whole new answer.", "answer", KEY))
    assert fake.shown_in(fake.channel_id) == ["A whole new answer."]
    assert len(fake.sent_to(fake.channel_id)) == 1, "never a second copy"
    assert len(fake.edits_of(str(cut))) >= 2


async def test_an_answer_id_is_rewritten_even_when_the_new_answer_does_not_stream(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot(STREAMING)
    targets = bot.runtime.gateway.targets
    first = targets.responder(ReplyTarget("discord", fake.channel_id))
    ids = reported(first)
    await first.on_delta("Cut off mid-sen")
    await eventually(lambda: ids)
    again = targets.responder(ReplyTarget("discord", fake.channel_id, answer_ids=ids[-1]))
    await again.send(Reply("The answer, in one piece.", "answer", KEY))
    assert fake.shown_in(fake.channel_id) == ["The answer, in one piece."]


async def test_a_resumed_answer_cut_off_again_by_a_restart_is_marked_in_that_message_without_a_resend_request(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot(STREAMING)
    targets = bot.runtime.gateway.targets
    first = targets.responder(ReplyTarget("discord", fake.channel_id))
    ids = reported(first)
    await first.on_delta("Cut off")
    await eventually(lambda: ids)
    again = targets.responder(ReplyTarget("discord", fake.channel_id, answer_ids=ids[-1]))
    await again.on_delta("Cut off again")
    await again.on_cancelled("shutdown")
    [shown] = fake.shown_in(fake.channel_id)
    assert shown == f"Cut off again\n\n{CANCEL_MARKS['shutdown']}"
    assert "again" not in CANCEL_MARKS["shutdown"] and "send" not in CANCEL_MARKS["shutdown"]


async def test_targets_are_registered_while_the_bot_runs_and_refuse_damaged_ids(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot()
    targets = bot.runtime.gateway.targets
    assert targets.can_answer("discord")
    try:
        targets.responder(ReplyTarget("discord", "../etc"))
    except ValueError:
        pass
    else:
        raise AssertionError("a damaged channel id must be refused")
    await bot.service.stop()
    assert not targets.can_answer("discord")


async def test_a_stored_message_is_gated_again_by_the_access_rules_of_now(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    """After a restart with a narrower allowlist, a stored message of someone no longer
    allowed is not resumed; one of someone still allowed is."""
    bot = await start_bot(f'allow_users = ["{fake.bob_id}"]')
    targets = bot.runtime.gateway.targets

    def stored(user: str) -> Inbound:
        return Inbound("discord", user, fake.channel_id, "hi", "1", mentioned_bot=True, space=fake.guild_id)

    assert targets.admits(stored(fake.bob_id))
    assert not targets.admits(stored(fake.alice_id))


async def test_a_stored_target_with_damaged_ids_is_parked_and_the_others_are_still_resumed(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot(STREAMING)
    store, gateway = bot.runtime.store, bot.runtime.gateway

    def item(channel: str, user: str) -> InboxItem:
        key = SessionKey(f"agent:main:discord:{user}:{channel}")
        inbound = Inbound("discord", user, channel, "hi", "1", mentioned_bot=True)
        target = ReplyTarget("discord", channel, reply_to=None)
        return InboxItem(key, uuid.uuid4().hex, "message", inbound, target, time.time())

    damaged, fine = item("not-a-snowflake", "u1"), item(fake.channel_id, "u2")
    await store.inbox.append(damaged)
    await store.inbox.append(fine)
    await gateway.resumer.scan()
    await fake.wait_for_sent(fake.channel_id)  # the good one is answered
    view = await store.inbox.items(damaged.key)
    assert view.pending == [] and [p.item_id for p in view.parked] == [damaged.item_id]
