"""The Discord adapter: real discord.py against the local fake Discord (REST v10 + gateway)."""

from __future__ import annotations

import asyncio
import logging
import re

import discord
import discord.http
import pytest

from bots.runtime import StartupError
from bots.testing import FixedAgent
from bots.testing.fake_discord import JSON, FakeDiscord, user_obj
from core.turn.chunking import FENCE, chunk_message, join_chunks
from tests.support.discord import TOKEN_ENV, StartBot

TURN = re.compile(r"turn (\d+) of session (\w+)")


def reply_texts(fake: FakeDiscord, channel: str) -> list[str]:
    return [str(m["content"]) for m in fake.sent_to(channel)]


def turn_of(text: str) -> tuple[int, str]:
    found = TURN.search(text)
    assert found is not None, text
    return int(found.group(1)), found.group(2)


# ------------------------------------------------------------------ guild messages


async def test_mention_in_guild_channel_shows_typing_then_replies_to_the_message(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    await start_bot()
    asked = await fake.send_message("hello there", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id)
    typing = fake.calls_to("POST", rf"/channels/{fake.channel_id}/typing")
    message_posts = fake.calls_to("POST", rf"/channels/{fake.channel_id}/messages")
    assert typing, "no typing indicator"
    assert fake.calls.index(typing[0]) < fake.calls.index(message_posts[0])
    assert str(sent[0]["content"]).startswith("echo: hello there\n")  # mention stripped
    assert int(sent[0]["request"]["message_reference"]["message_id"]) == int(asked["id"])
    assert fake.identify is not None and fake.identify["intents"] & (1 << 15)  # message content


async def test_guild_message_without_mention_gets_no_reply_and_no_session(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot()
    await fake.send_message("just chatting", user=fake.alice_id)
    await fake.send_message("barrier", user=fake.bob_id, mention=True)
    await fake.wait_for_sent(fake.channel_id)
    assert reply_texts(fake, fake.channel_id) == [reply_texts(fake, fake.channel_id)[0]]
    assert reply_texts(fake, fake.channel_id)[0].startswith("echo: barrier")
    assert await bot.sessions() == [f"agent:main:discord:{fake.bob_id}:{fake.channel_id}"]


async def test_reply_to_the_bots_message_counts_as_addressed(start_bot: StartBot, fake: FakeDiscord) -> None:
    await start_bot()
    await fake.send_message("first", mention=True)
    first = (await fake.wait_for_sent(fake.channel_id))[0]
    await fake.send_message("and then?", reply_to=first)
    sent = await fake.wait_for_sent(fake.channel_id, 2)
    assert str(sent[1]["content"]).startswith("echo: and then?")
    assert turn_of(str(sent[1]["content"]))[0] == 2


async def test_mention_override_lets_a_channel_answer_without_mention(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    await start_bot(f'mention_overrides = {{ "{fake.other_channel_id}" = false }}')
    await fake.send_message("no mention needed here", channel=fake.other_channel_id)
    sent = await fake.wait_for_sent(fake.other_channel_id)
    assert str(sent[0]["content"]).startswith("echo: no mention needed here")


async def test_other_bots_are_ignored_unless_allowed(start_bot: StartBot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    other_bot = user_obj("4242", "otherbot", bot=True)
    await fake.send_message("from a bot", mention=True, author=other_bot)
    await fake.send_message("barrier", user=fake.bob_id, mention=True)
    await fake.wait_for_sent(fake.channel_id)
    assert len(reply_texts(fake, fake.channel_id)) == 1
    assert "4242" not in " ".join(await bot.sessions())


async def test_allow_roles_admits_members_of_a_role_only(start_bot: StartBot, fake: FakeDiscord) -> None:
    await start_bot(f'allow_roles = ["{fake.role_id}"]')
    await fake.send_message("bob has no role", user=fake.bob_id, mention=True)
    await fake.send_message("alice is a helper", user=fake.alice_id, mention=True)
    sent = await fake.wait_for_sent(fake.channel_id)
    assert [str(m["content"]).split("\n")[0] for m in sent] == ["echo: alice is a helper"]


# ------------------------------------------------------------------------- DMs


async def test_direct_message_gets_a_reply_without_mention(start_bot: StartBot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    await fake.send_message("hi in private", dm=True)
    dm = fake.dm_ids[fake.alice_id]
    sent = await fake.wait_for_sent(dm)
    assert str(sent[0]["content"]).startswith("echo: hi in private")
    assert await bot.sessions() == [f"agent:main:discord:{fake.alice_id}:{dm}"]


async def test_direct_messages_disabled_get_nothing(start_bot: StartBot, fake: FakeDiscord) -> None:
    bot = await start_bot('dm_policy = "disabled"')
    await fake.send_message("hi in private", dm=True)
    await fake.send_message("barrier", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    assert fake.sent_to(fake.dm_ids[fake.alice_id]) == []
    assert fake.calls_to("POST", rf"/channels/{fake.dm_ids[fake.alice_id]}/typing") == []
    assert await bot.sessions() == [f"agent:main:discord:{fake.alice_id}:{fake.channel_id}"]


# ---------------------------------------------------------------- conversations


async def test_three_quick_messages_are_one_session_answered_in_order(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot('ack_reaction = "👀"', echo_delay_ms=300)
    for text in ("one", "two", "three"):
        await fake.send_message(text, mention=True)
    sent = await fake.wait_for_sent(fake.channel_id, 3, timeout=15)
    texts = [str(m["content"]) for m in sent]
    assert [t.split("\n")[0] for t in texts] == ["echo: one", "echo: two", "echo: three"]
    turns = [turn_of(t) for t in texts]
    assert [n for n, _ in turns] == [1, 2, 3]
    assert len({sid for _, sid in turns}) == 1
    assert len(await bot.sessions()) == 1
    # The two messages that waited behind a running turn were acknowledged.
    assert len(fake.calls_to("PUT", r"/channels/\d+/messages/\d+/reactions/.+/@me")) == 2


@pytest.mark.parametrize(("scope", "sessions"), [("user-channel", 2), ("channel", 1)])
async def test_two_users_in_one_channel_sessions_follow_the_scope(
    start_bot: StartBot, fake: FakeDiscord, scope: str, sessions: int
) -> None:
    bot = await start_bot(more_toml=f'[session]\nscope = "{scope}"')
    await fake.send_message("from alice", user=fake.alice_id, mention=True)
    await fake.wait_for_sent(fake.channel_id, 1)
    await fake.send_message("from bob", user=fake.bob_id, mention=True)
    sent = await fake.wait_for_sent(fake.channel_id, 2)
    assert len(await bot.sessions()) == sessions
    assert turn_of(str(sent[1]["content"]))[0] == (1 if sessions == 2 else 2)


async def test_a_thread_is_its_own_session(start_bot: StartBot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    await fake.send_message("in the channel", mention=True)
    await fake.send_message("in the thread", mention=True, channel=fake.thread_id)
    await fake.wait_for_sent(fake.channel_id)
    sent = await fake.wait_for_sent(fake.thread_id)
    assert turn_of(str(sent[0]["content"]))[0] == 1
    assert await bot.sessions() == sorted(
        f"agent:main:discord:{fake.alice_id}:{c}" for c in (fake.channel_id, fake.thread_id)
    )


async def test_channel_allowlist_admits_threads_of_an_allowed_parent_only(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot(f'allow_channels = ["{fake.channel_id}"]')
    await fake.send_message("elsewhere", mention=True, channel=fake.other_channel_id)
    await fake.send_message("in the thread", mention=True, channel=fake.thread_id)
    await fake.wait_for_sent(fake.thread_id)
    assert fake.sent_to(fake.other_channel_id) == []
    assert await bot.sessions() == [f"agent:main:discord:{fake.alice_id}:{fake.thread_id}"]


async def test_long_reply_with_code_is_split_into_balanced_chunks_that_reassemble(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    prose = "".join(f"Line {i} of the explanation goes here.\n" for i in range(40))
    code = "".join(f"    value_{i} = compute({i}) + offset  # step {i}\n" for i in range(70))
    long_text = f"{prose}```python\n{code}```\n{prose}"
    assert len(long_text) > 5000
    await start_bot(agent=FixedAgent(long_text))
    asked = await fake.send_message("write it all", mention=True)
    expected = chunk_message(long_text, 2000)
    sent = await fake.wait_for_sent(fake.channel_id, len(expected))
    texts = [str(m["content"]) for m in sent]
    assert len(texts) == len(expected) >= 3
    assert all(len(t) <= 2000 for t in texts)
    assert all(sum(line.lstrip().startswith(FENCE) for line in t.split("\n")) % 2 == 0 for t in texts)
    assert texts == [c.text for c in expected]
    assert join_chunks(expected) == long_text
    refs = [m["request"].get("message_reference") for m in sent]
    assert int(refs[0]["message_id"]) == int(asked["id"])
    assert refs[1:] == [None] * (len(refs) - 1)


async def test_message_replayed_after_a_gateway_resume_gives_one_turn(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    await start_bot()
    fake.replay_on_resume = 1
    await fake.send_message("only once", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    await fake.disconnect()
    await fake.wait_until(lambda: fake.resumes == 1)
    await fake.send_message("after the resume", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id, 2)
    texts = [str(m["content"]) for m in sent]
    assert texts[1].startswith("echo: after the resume")
    assert turn_of(texts[1])[0] == 2
    assert len(fake.sent_to(fake.channel_id)) == 2


# ------------------------------------------------------------------- commands


async def test_slash_new_starts_a_new_session_and_keeps_the_old_transcript(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot()
    await fake.send_message("remember me", mention=True)
    _, old_prefix = turn_of(str((await fake.wait_for_sent(fake.channel_id))[0]["content"]))
    [old] = (await bot.runtime.store.list()).entries
    interaction = await fake.send_interaction("new")
    callback = await fake.wait_for_call("POST", rf"/interactions/{interaction['id']}/.+/callback")
    assert callback.json["data"]["content"] == "Started a new conversation."
    await fake.send_message("who am I?", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id, 2)
    turn, new_prefix = turn_of(str(sent[1]["content"]))
    assert (turn, new_prefix != old_prefix) == (1, True)
    kept = await bot.runtime.store.tail(old.session_id, 10)
    assert [m.content for m in kept if m.role == "user"] == ["remember me"]


async def test_text_new_command_starts_a_new_session(start_bot: StartBot, fake: FakeDiscord) -> None:
    await start_bot()
    await fake.send_message("remember me", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    await fake.send_message("/new", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id, 2)
    assert sent[1]["content"] == "Started a new conversation."
    await fake.send_message("again", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id, 3)
    assert turn_of(str(sent[2]["content"]))[0] == 1


async def test_slash_status_shows_key_session_and_turns_ephemerally(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot()
    await fake.send_message("count me", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    # A streamed answer shows before its turn is stored: wait for the lane to finish.
    async with asyncio.timeout(5):
        while len(bot.runtime.gateway.lanes):
            await asyncio.sleep(0.01)
    [entry] = (await bot.runtime.store.list()).entries
    interaction = await fake.send_interaction("status")
    callback = await fake.wait_for_call("POST", rf"/interactions/{interaction['id']}/.+/callback")
    data: JSON = callback.json["data"]
    assert data["flags"] & 64  # ephemeral
    assert entry.key in data["content"] and entry.session_id in data["content"]
    assert f"Session `{entry.session_id}`: 1 turns" in data["content"]


async def test_slash_commands_are_synced_at_startup(start_bot: StartBot, fake: FakeDiscord) -> None:
    await start_bot()
    call = await fake.wait_for_call("PUT", rf"/applications/{fake.app_id}/commands")
    assert sorted(c["name"] for c in call.json) == ["model", "new", "reset", "status", "stop"]


async def test_failed_command_sync_is_logged_and_the_bot_still_answers(
    start_bot: StartBot, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_command_sync = True
    await start_bot()
    await fake.wait_for_call("PUT", rf"/applications/{fake.app_id}/commands")
    await fake.send_message("still here?", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    assert "could not register the slash commands" in caplog.text


# ------------------------------------------------------------ platform failures


async def test_403_on_send_is_logged_and_the_bot_keeps_answering(
    start_bot: StartBot, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chatlane.discord")
    fake.forbidden_channels.add(fake.other_channel_id)
    await start_bot()
    await fake.send_message("can you hear me?", mention=True, channel=fake.other_channel_id)
    await fake.wait_for_call("POST", rf"/channels/{fake.other_channel_id}/messages")
    await fake.send_message("and here?", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id)
    assert str(sent[0]["content"]).startswith("echo: and here?")
    assert "missing permission (403, Discord code 50013" in caplog.text
    assert "Send Messages" in caplog.text


async def test_rate_limited_send_is_retried_and_delivered(start_bot: StartBot, fake: FakeDiscord) -> None:
    fake.rate_limited_sends = 1
    await start_bot()
    await fake.send_message("despite limits", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id)
    assert str(sent[0]["content"]).startswith("echo: despite limits")
    assert len(fake.calls_to("POST", rf"/channels/{fake.channel_id}/messages")) == 2


async def test_rate_limit_longer_than_allowed_is_logged_not_waited_for(
    start_bot: StartBot, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    fake.rate_limited_sends, fake.retry_after = 1, 3600.0
    await start_bot('max_ratelimit_wait_s = 30\nstream = "off"')  # the one-shot send path
    await fake.send_message("too fast", mention=True)
    await fake.send_message("later", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id)
    assert turn_of(str(sent[0]["content"]))[0] == 2  # the lane went on after the failed send
    assert "rate limited for 3600s, longer than discord.max_ratelimit_wait_s" in caplog.text


async def test_missing_token_is_a_clear_startup_error(start_bot: StartBot) -> None:
    with pytest.raises(StartupError, match=f"no bot token: set the environment variable {TOKEN_ENV}"):
        await start_bot(token=None, enabled=False)


async def test_rejected_token_is_a_clear_startup_error(start_bot: StartBot) -> None:
    with pytest.raises(StartupError, match="rejected the bot token") as caught:
        await start_bot(token="not-the-token")
    assert isinstance(caught.value.__cause__, discord.LoginFailure)
    assert "not-the-token" not in str(caught.value)
    assert discord.http.Route.BASE == "https://discord.com/api/v10"  # process-wide setting put back


async def test_message_content_intent_not_enabled_is_a_clear_startup_error(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    fake.close_on_identify = 4014  # what Discord does when a privileged intent is off
    with pytest.raises(StartupError, match="switch on 'Message Content Intent'"):
        await start_bot()


async def test_sharded_client_identifies_with_its_shard_and_answers(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot("shard_count = 1\nshard_ids = [0]")
    assert isinstance(bot.service.client, discord.AutoShardedClient)
    assert fake.identify is not None and fake.identify["shard"] == [0, 1]
    await fake.send_message("sharded", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id)
    assert str(sent[0]["content"]).startswith("echo: sharded")


async def test_collect_mode_sends_one_answer_for_messages_answered_together(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    await start_bot(echo_delay_ms=300, more_toml='[queue]\nmode = "collect"')
    await fake.send_message("one", mention=True)
    await fake.wait_for_call("POST", rf"/channels/{fake.channel_id}/typing")  # turn 1 is running
    await fake.send_message("two", mention=True)
    last = await fake.send_message("three", mention=True)
    await fake.wait_for_sent(fake.channel_id, 2, timeout=15)
    await fake.send_message("barrier", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id, 3, timeout=15)
    texts = [str(m["content"]).split("\n")[0] for m in sent]
    assert texts == ["echo: one", "echo: two / three", "echo: barrier"]  # "two" was not answered twice
    assert int(sent[1]["request"]["message_reference"]["message_id"]) == int(last["id"])


async def test_slash_command_outside_the_allowed_channels_is_refused(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot(f'allow_channels = ["{fake.channel_id}"]')
    interaction = await fake.send_interaction("new", channel=fake.other_channel_id)
    callback = await fake.wait_for_call("POST", rf"/interactions/{interaction['id']}/.+/callback")
    assert callback.json["data"]["content"] == "I'm not set up to answer here."
    assert callback.json["data"]["flags"] & 64
    assert await bot.sessions() == []
