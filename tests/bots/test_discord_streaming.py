"""Streamed answers on Discord: real discord.py against the fake Discord, with a slow
streaming agent (60 pieces, 30 ms apart) so the answer visibly grows."""

from __future__ import annotations

import asyncio
import itertools

from bots.testing import SlowStreamAgent, eventually
from bots.testing.fake_discord import FakeDiscord
from core.store.files.store import FileStore
from core.turn.chunking import FENCE, chunk_message, join_chunks, split_message
from core.turn.streaming import CANCEL_MARKS, STOPPED_MARK
from tests.support.discord import Bot, StartBot

INTERVAL = 0.25
STREAMING = f"stream_edit_interval_s = {INTERVAL}\n"
MESSAGE = r"/channels/\d+/messages/\d+"


async def idle(bot: Bot, taken: int = 1) -> None:
    """Until the gateway took `taken` messages and no conversation has work left
    (every answer final and delivered)."""

    def took() -> int:
        value = bot.runtime.metrics.registry.get_sample_value(
            "chatlane_messages_in_total", {"platform": "discord"}
        )
        return int(value or 0)

    async with asyncio.timeout(15):
        while took() < taken or len(bot.runtime.gateway.lanes):
            await asyncio.sleep(0.02)


def fences_balanced(text: str) -> bool:
    return sum(1 for line in text.split("\n") if line.lstrip(" ").startswith(FENCE)) % 2 == 0


async def test_streamed_answer_is_edited_several_times_at_the_interval_and_ends_as_the_exact_answer(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    agent = SlowStreamAgent(60, 0.03)
    bot = await start_bot(STREAMING, agent=agent)
    await fake.send_message("tell me", mention=True)
    [first] = await fake.wait_for_sent(fake.channel_id)
    await idle(bot)
    edits = fake.edits_of(first["id"])
    assert len(edits) >= 3, "the message grew in place while the agent streamed"
    assert fake.shown_in(fake.channel_id) == [agent.text_for(1, "tell me")]
    post = fake.calls_to("POST", rf"/channels/{fake.channel_id}/messages")[0]
    times = [post.at] + [e.at for e in edits]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= INTERVAL * 0.95, gaps
    assert first["request"]["message_reference"]["message_id"]  # still a reply to the asker


async def test_a_4500_character_streamed_answer_rolls_over_at_clean_boundaries_with_fences_balanced(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    code = "\n".join(f"    line_{i} = compute({i})  # step" for i in range(60))
    body = "Intro paragraph. " * 50 + f"\n```python\n{code}\n```\n" + "Outro sentence here. " * 80
    agent = SlowStreamAgent(60, 0.03, body=body)
    bot = await start_bot(STREAMING, agent=agent)
    await fake.send_message("long one", mention=True)
    await idle(bot)
    expected = agent.text_for(1, "long one")
    assert len(expected) > 4500
    shown = fake.shown_in(fake.channel_id)
    assert shown == split_message(expected, 2000), "the same messages a non-streamed reply sends"
    assert join_chunks(chunk_message(expected, 2000)) == expected
    assert len(shown) == 3 and all(len(m) <= 2000 and fences_balanced(m) for m in shown)
    assert any(fake.edits_of(m["id"]) for m in fake.sent_to(fake.channel_id)), "rolled over while streaming"


async def test_a_429_on_edit_slows_the_editor_and_loses_no_text(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    agent = SlowStreamAgent(60, 0.03)
    fake.rate_limit("PATCH", MESSAGE, times=3, retry_after=0.4)
    bot = await start_bot(STREAMING, agent=agent)
    await fake.send_message("under pressure", mention=True)
    await idle(bot)
    limited = [c for c in fake.calls_to("PATCH", MESSAGE) if c.status == 429]
    assert len(limited) == 3
    assert fake.shown_in(fake.channel_id) == [agent.text_for(1, "under pressure")]


async def test_interrupt_mid_stream_marks_the_partial_and_the_merged_answer_is_delivered(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    agent = SlowStreamAgent(60, 0.03)
    bot = await start_bot(STREAMING, agent=agent, more_toml='[queue]\nmode = "interrupt"')
    await fake.send_message("first", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    await fake.send_message("second", mention=True)
    await idle(bot, 2)
    partial, merged = fake.shown_in(fake.channel_id)
    assert partial.endswith(CANCEL_MARKS["interrupted"])
    assert agent.text_for(1, "first").startswith(partial.removesuffix(CANCEL_MARKS["interrupted"]).rstrip())
    assert merged == agent.text_for(1, "first + second")


async def test_text_stop_mid_stream_marks_the_partial_keeps_the_message_in_memory_and_confirms(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    agent = SlowStreamAgent(60, 0.03)
    bot = await start_bot(STREAMING, agent=agent)
    asked = await fake.send_message("go on and on", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    await fake.send_message("/stop", mention=True)
    await idle(bot, 2)
    partial, confirmation = fake.shown_in(fake.channel_id)
    assert partial.endswith(STOPPED_MARK) and len(partial) < len(agent.text_for(1, "go on and on"))
    assert confirmation == "Stopped the answer in progress."
    [entry] = (await bot.runtime.store.list()).entries
    [kept] = await bot.runtime.store.tail(entry.session_id, 10)
    assert (kept.role, kept.content, kept.interrupted, kept.message_id) == (
        "user",
        "go on and on",
        True,
        asked["id"],
    )
    await fake.send_message("and now?", mention=True)
    await idle(bot, 3)
    assert fake.shown_in(fake.channel_id)[-1] == agent.text_for(1, "and now?")
    assert [m.content for m in agent.turns[-1].history] == ["go on and on"]  # the cut-off one, remembered


async def test_slash_stop_stops_the_running_answer_and_answers_ephemerally(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot(STREAMING, agent=SlowStreamAgent(60, 0.03))
    await fake.send_message("keep talking", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    interaction = await fake.send_interaction("stop")
    callback = await fake.wait_for_call("POST", rf"/interactions/{interaction['id']}/.+/callback")
    assert callback.json["data"]["content"] == "Stopped the answer in progress."
    assert callback.json["data"]["flags"] & 64
    await idle(bot)
    [partial] = fake.shown_in(fake.channel_id)
    assert partial.endswith(STOPPED_MARK)


async def test_agent_failure_mid_stream_turns_the_partial_into_the_failure_notice(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    agent = SlowStreamAgent(60, 0.03, fail_after=30)
    bot = await start_bot(STREAMING, agent=agent)
    await fake.send_message("try", mention=True)
    await idle(bot)
    [partial] = fake.shown_in(fake.channel_id)
    failure = bot.runtime.loaded.config.agent.failure_message
    assert partial.endswith(f"⚠️ {failure}")
    assert "secret detail" not in partial


async def test_rapid_followups_each_get_their_own_streamed_answer_in_order(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    agent = SlowStreamAgent(20, 0.03)
    bot = await start_bot(STREAMING, agent=agent)
    for text in ("one", "two", "three"):
        await fake.send_message(text, mention=True)
    await idle(bot, 3)
    expected = [agent.text_for(n, said) for n, said in ((1, "one"), (2, "two"), (3, "three"))]
    assert fake.shown_in(fake.channel_id) == expected


async def test_stream_off_sends_the_whole_answer_once_without_edits(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    agent = SlowStreamAgent(60, 0.01)
    bot = await start_bot(STREAMING + 'stream = "off"', agent=agent)
    await fake.send_message("quietly", mention=True)
    await fake.wait_for_sent(fake.channel_id)  # `idle` alone may look before the message's lane exists
    await idle(bot)
    assert fake.shown_in(fake.channel_id) == [agent.text_for(1, "quietly")]
    assert not fake.calls_to("PATCH", MESSAGE)


async def test_status_reactions_show_waiting_working_and_done(start_bot: StartBot, fake: FakeDiscord) -> None:
    bot = await start_bot(STREAMING + "status_reactions = true", agent=SlowStreamAgent(20, 0.03))
    await fake.send_message("a", mention=True)
    second = await fake.send_message("b", mention=True)
    await idle(bot, 2)
    trail = [
        (c.method, c.path.split("/")[-2])
        for c in fake.calls
        if f"/messages/{second['id']}/reactions/" in c.path
    ]
    assert trail == [
        ("PUT", "⏳"),  # waiting behind "a"
        ("DELETE", "⏳"),
        ("PUT", "👀"),  # being answered
        ("DELETE", "👀"),
        ("PUT", "✅"),  # answered
    ]


async def test_a_fenced_turn_streams_again_into_the_same_message_without_mixing_attempts(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    """A turn whose commit is fenced out (here: its session's entry was replaced under it,
    bypassing the lock, as a restore of the state folder would) is answered again from the
    start: the message it streamed into restarts, and never shows the two attempts run
    together."""
    agent = SlowStreamAgent(60, 0.03)
    bot = await start_bot(STREAMING, agent=agent)
    await fake.send_message("again please", mention=True)
    [first] = await fake.wait_for_sent(fake.channel_id)
    [entry] = (await bot.runtime.store.list()).entries
    store = bot.runtime.store
    assert isinstance(store, FileStore)
    replaced = bot.runtime.gateway.reserver.mint(entry.key)
    await asyncio.to_thread(store.layout.write, store.layout.entry_file(entry.key), replaced)
    await idle(bot)
    answer = agent.text_for(1, "again please")
    assert len(agent.turns) == 2, "answered a second time, in the new session"
    assert fake.shown_in(fake.channel_id) == [answer]
    assert all(answer.startswith(e.json["content"]) for e in fake.edits_of(first["id"]))


async def test_shutdown_mid_stream_marks_the_partial_as_paused_and_keeps_the_message_for_the_next_process(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    """The durable inbox answers it after the restart, in this same message: nothing is
    stored as interrupted, nobody is asked to send it again."""
    bot = await start_bot(STREAMING, agent=SlowStreamAgent(60, 0.05))
    await fake.send_message("long story", mention=True)
    [first] = await fake.wait_for_sent(fake.channel_id)
    await eventually(lambda: fake.edits_of(first["id"]))  # the answer grew (its id is noted before)
    await bot.runtime.gateway.close(timeout=0.2)
    [partial] = fake.shown_in(fake.channel_id)
    assert partial.endswith(CANCEL_MARKS["shutdown"])
    [entry] = (await bot.runtime.store.list()).entries
    assert await bot.runtime.store.tail(entry.session_id, 10) == []
    [item] = (await bot.runtime.store.inbox.items(entry.key)).pending
    assert (item.inbound.text, item.answer_ids) == ("long story", (first["id"],))
    asked = fake.sent_to(fake.channel_id)[0]["request"]["message_reference"]["message_id"]
    assert item.target is not None and item.target.reply_to == str(asked)
