"""Discord: thread history on a session's first turn, and attachments, through real discord.py."""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from bots.testing.fake_discord import FakeDiscord
from core.agents.openai import BACKFILL_INTRO
from core.turn.fetch import NOT_ALLOWED_HOST
from tests.bots.test_discord_bot import reply_texts
from tests.fakes.fake_llm import FakeLLM
from tests.fakes.files import log_text, png
from tests.support.discord import StartBot
from tests.support.llm import model_agent, untimed


def history_reads(fake: FakeDiscord, channel: str) -> int:
    return len(fake.calls_to("GET", rf"/channels/{channel}/messages"))


def contents(messages: list[dict[str, Any]]) -> list[Any]:
    return [untimed(m["content"]) for m in messages]


async def test_first_mention_in_a_thread_gives_the_model_the_last_20_of_30_earlier_messages_once(
    start_bot: StartBot, fake: FakeDiscord, llm: FakeLLM
) -> None:
    fake.seed_history(fake.thread_id, [f"earlier {i}" for i in range(1, 31)])
    await start_bot(agent=model_agent(llm))
    await fake.send_message("what did we decide?", channel=fake.thread_id, mention=True)
    await fake.wait_for_sent(fake.thread_id)
    first = llm.calls[0].messages
    intro = contents(first).index(BACKFILL_INTRO)
    backfilled = contents(first)[intro + 1 : intro + 21]
    assert backfilled == [f"alice: earlier {i}" for i in range(11, 31)]
    assert contents(first)[intro + 21 :] == ["what did we decide?"]

    await fake.send_message("and then?", channel=fake.thread_id, mention=True)
    await fake.wait_for_sent(fake.thread_id, 2)
    second = contents(llm.calls[1].messages)
    assert second.count("alice: earlier 30") == 1  # from memory, not read again
    assert second[-1] == "and then?"
    assert history_reads(fake, fake.thread_id) == 1


async def test_the_bots_own_earlier_messages_are_backfilled_as_the_assistant(
    start_bot: StartBot, fake: FakeDiscord, llm: FakeLLM
) -> None:
    fake.seed_history(fake.channel_id, ["can someone look at the build?"])
    said = fake.message_payload(
        "I can, after lunch.", author=fake.bot_user(), channel_id=fake.channel_id, in_guild=True
    )
    fake.history[fake.channel_id].append(said)
    await start_bot(agent=model_agent(llm))
    await fake.send_message("so?", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    shown = [(m["role"], untimed(m["content"])) for m in llm.calls[0].messages]
    assert ("user", "alice: can someone look at the build?") in shown
    assert ("assistant", "I can, after lunch.") in shown


async def test_echo_counts_the_backfilled_messages_on_the_first_turn_only(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    fake.seed_history(fake.channel_id, ["one", "two", "three"])
    await start_bot()
    await fake.send_message("hi", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    await fake.send_message("again", mention=True)
    await fake.wait_for_sent(fake.channel_id, 2)
    first, second = reply_texts(fake, fake.channel_id)
    assert "read 3 earlier messages of the thread" in first
    assert "earlier messages" not in second
    assert "first thing I remember you saying: 'hi'" in second  # backfill is not the user's own memory


async def test_after_new_the_next_turn_backfills_only_what_was_said_after_the_reset(
    start_bot: StartBot, fake: FakeDiscord, llm: FakeLLM
) -> None:
    """Before: the new session's first turn read the exchange `/new` had just ended."""
    fake.seed_history(fake.channel_id, ["before"])
    await start_bot(agent=model_agent(llm))
    await fake.send_message("hi", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    await fake.send_message("/new", mention=True)
    await fake.wait_for_sent(fake.channel_id, 2)
    await fake.send_message("said after the reset", user=fake.bob_id)  # not addressed: context only
    await fake.send_message("fresh start", mention=True)
    await fake.wait_for_sent(fake.channel_id, 3)
    shown = contents(llm.calls[-1].messages)
    assert "bob: said after the reset" in shown
    assert shown[-1] == "fresh start"
    intro = shown.index(BACKFILL_INTRO)
    assert "alice: before" not in shown and "alice: hi" not in shown, shown
    assert shown[intro + 1 :] == ["Started a new conversation.", "bob: said after the reset", "fresh start"]
    assert history_reads(fake, fake.channel_id) == 2


async def test_backfilled_messages_carry_their_real_times(
    start_bot: StartBot, fake: FakeDiscord, llm: FakeLLM
) -> None:
    """Before: every backfilled message got one and the same minute (the fake's ids, which
    discord.py reads times from, carried no time)."""
    now = time.time()
    times = [now - 3 * 3600, now - 2 * 3600 - 60, now - 5 * 60]
    fake.seed_history(fake.channel_id, ["first", "second", "third"], at=times)
    await start_bot(agent=model_agent(llm))
    await fake.send_message("when was that?", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    shown = [str(m["content"]) for m in llm.calls[0].messages]
    lines = [line for line in shown if line.startswith("alice (")]
    expected = [
        f"alice ({datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M} UTC): {text}"
        for t, text in zip(times, ["first", "second", "third"], strict=True)
    ]
    assert lines == expected


async def test_history_backfill_zero_never_reads_the_channel(start_bot: StartBot, fake: FakeDiscord) -> None:
    fake.seed_history(fake.channel_id, ["before"])
    await start_bot("history_backfill = 0")
    await fake.send_message("hi", mention=True)
    sent = await fake.wait_for_sent(fake.channel_id)
    assert "earlier messages" not in str(sent[0]["content"])
    assert history_reads(fake, fake.channel_id) == 0


async def test_without_read_message_history_the_turn_is_answered_and_the_log_says_why(
    start_bot: StartBot, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    fake.seed_history(fake.channel_id, ["before"])
    fake.forbidden_history.add(fake.channel_id)
    await start_bot()
    with caplog.at_level(logging.WARNING, logger="chatlane.discord"):
        await fake.send_message("hi", mention=True)
        sent = await fake.wait_for_sent(fake.channel_id)
    assert str(sent[0]["content"]).startswith("echo: hi\n")
    assert any("Read Message History" in r.getMessage() for r in caplog.records)


async def test_a_channel_outside_allow_channels_is_never_read(start_bot: StartBot, fake: FakeDiscord) -> None:
    fake.seed_history(fake.other_channel_id, ["secret"])
    await start_bot(f'allow_channels = ["{fake.channel_id}"]')
    await fake.send_message("hi", channel=fake.other_channel_id, mention=True)
    await fake.send_message("barrier", mention=True)
    await fake.wait_for_sent(fake.channel_id)
    assert history_reads(fake, fake.other_channel_id) == 0
    assert fake.sent_to(fake.other_channel_id) == []


# ------------------------------------------------------------------ attachments


async def test_an_image_reaches_the_model_as_an_image_part(
    start_bot: StartBot, fake: FakeDiscord, llm: FakeLLM
) -> None:
    picture = png(640, 480)
    await start_bot("history_backfill = 0", agent=model_agent(llm, vision=True))
    await fake.send_message("what is this?", mention=True, files={"cat.png": picture})
    await fake.wait_for_sent(fake.channel_id)
    content = llm.calls[0].messages[-1]["content"]
    assert content[0] == {"type": "text", "text": "what is this?"}
    assert content[1]["type"] == "image_url"
    assert content[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(picture).decode()


async def test_without_vision_the_model_gets_a_placeholder_and_a_text_file_inline(
    start_bot: StartBot, fake: FakeDiscord, llm: FakeLLM
) -> None:
    await start_bot("history_backfill = 0", agent=model_agent(llm))
    files = {"cat.png": png(64, 32), "build.log": log_text(3)}
    await fake.send_message("look", mention=True, files=files)
    await fake.wait_for_sent(fake.channel_id)
    content = llm.calls[0].messages[-1]["content"]
    assert isinstance(content, str)
    assert "[image: cat.png 64x32]" in content
    assert "--- file: build.log (text/plain, 3 lines) ---\n2026-12-01 10:00:01 INFO line 1\n" in content


async def test_echo_shows_the_files_it_received_and_a_later_turn_still_has_them(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    bot = await start_bot("history_backfill = 0")
    await fake.send_message("", mention=True, files={"cat.png": png(), "log.txt": log_text()})
    sent = await fake.wait_for_sent(fake.channel_id)
    assert str(sent[0]["content"]).startswith("echo: [image: cat.png 640x480] [file: log.txt, 1,204 lines]\n")
    key = f"agent:main:discord:{fake.alice_id}:{fake.channel_id}"
    entry = await bot.runtime.store.get(key)  # type: ignore[arg-type]
    assert entry is not None
    kept = (await bot.runtime.store.tail(entry.session_id, 10))[0].attachments
    assert [(a.name, a.mime, a.width) for a in kept] == [
        ("cat.png", "image/png", 640),
        ("log.txt", "text/plain", 0),
    ]
    blobs = bot.runtime.store.get_blobs  # type: ignore[attr-defined]
    assert set(await blobs(entry.session_id, [a.sha256 for a in kept])) == {a.sha256 for a in kept}


async def test_an_oversized_file_gets_one_line_and_the_turn_goes_on(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    await start_bot("history_backfill = 0", more_toml="[attachments]\nmax_attachment_bytes = 1000")
    big = fake.attachment("report.pdf", b"x" * 10, size=5000)  # Discord says 5000: never downloaded
    msg = fake.message_payload(
        f"<@{fake.bot_id}> read this",
        author=fake.person(fake.alice_id),
        channel_id=fake.channel_id,
        in_guild=True,
        mentions=[fake.bot_user()],
        attachments=[big, fake.attachment("notes.txt", b"fine\n")],
    )
    await fake.dispatch("MESSAGE_CREATE", msg)
    sent = await fake.wait_for_sent(fake.channel_id)
    text = str(sent[0]["content"])
    assert text.startswith(
        "I couldn't read report.pdf: larger than 1000 bytes\n\necho: read this [file: notes.txt, 1 lines]"
    )
    assert text.count("I couldn't read") == 1


async def test_a_binary_file_is_refused_by_its_bytes_not_its_name(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    await start_bot("history_backfill = 0")
    await fake.send_message("see", mention=True, files={"photo.png": b"\x00\x01binary\x00"})
    sent = await fake.wait_for_sent(fake.channel_id)
    assert str(sent[0]["content"]).startswith(
        "I couldn't read photo.png: it is not an image or a text file\n\n"
    )


async def test_attachments_are_fetched_from_discords_cdn_hosts_only(
    start_bot: StartBot, fake: FakeDiscord
) -> None:
    """With the default `attachment_hosts` (Discord's CDN), a URL on any other host (here
    the fake's 127.0.0.1) is refused unread, and the user hears so (issue 29)."""
    await start_bot('history_backfill = 0\nattachment_hosts = ["cdn.discordapp.com", "media.discordapp.net"]')
    await fake.send_message("see", mention=True, files={"notes.txt": b"secret from an internal host\n"})
    sent = await fake.wait_for_sent(fake.channel_id)
    assert str(sent[0]["content"]).startswith(f"I couldn't read notes.txt: {NOT_ALLOWED_HOST}\n\n")
    assert "secret" not in str(sent[0]["content"])


async def test_a_first_dm_reads_the_dm_history(start_bot: StartBot, fake: FakeDiscord) -> None:
    dm = fake.dm_ids[fake.alice_id]
    fake.seed_history(dm, ["earlier in private"])
    await start_bot()
    await fake.send_message("hi", dm=True)
    sent = await fake.wait_for_sent(dm)
    assert "read 1 earlier messages of the thread" in str(sent[0]["content"])
