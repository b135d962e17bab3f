"""The conversation commands say the same words on every platform: `/status` asked as a
Discord slash command, a Slack slash command and a message on either (real discord.py and
slack-bolt against the local fakes) gives core's one text, while a turn runs and one waits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bots.runtime import Runtime
from bots.testing import RecordingAgent, eventually
from bots.testing.fake_discord import FakeDiscord
from bots.testing.fake_slack import DM, message_event
from core.door import describe_status
from core.model import SessionKey
from tests.support.discord import StartBot
from tests.support.slack import running

STATUS_HEAD = "Conversation `"


def held() -> RecordingAgent:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    return agent


async def one_running_one_waiting(runtime: Runtime, agent: RecordingAgent) -> SessionKey:
    """Once the first message's turn runs and the second waits: their conversation's key."""
    await agent.started.wait()
    [entry] = (await runtime.store.list()).entries
    key = SessionKey(entry.key)
    await eventually(lambda: runtime.gateway.lanes.waiting(key) == (1, True))
    return key


def same_words(text: str, key: SessionKey, session_id: str) -> str:
    """`text` with this conversation's own ids taken out: what every platform shares."""
    return text.replace(key, "KEY").replace(session_id, "SESSION")


async def test_status_reads_the_same_from_discord_slack_and_a_message(
    start_bot: StartBot, fake: FakeDiscord, tmp_path: Path
) -> None:
    agent = held()
    bot = await start_bot(agent=agent)
    await fake.send_message("one", mention=True)
    await fake.send_message("two", mention=True)
    key = await one_running_one_waiting(bot.runtime, agent)
    expected = describe_status(await bot.runtime.gateway.status(key))
    interaction = await fake.send_interaction("status")
    callback = await fake.wait_for_call("POST", rf"/interactions/{interaction['id']}/.+/callback")
    await fake.send_message("/status", mention=True)
    [by_text] = await eventually(
        lambda: [m for m in fake.shown_in(fake.channel_id) if m.startswith(STATUS_HEAD)]
    )
    assert callback.json["data"]["content"] == by_text == expected
    assert "Answering now; 1 more waiting." in expected
    entry = await bot.runtime.store.get(key)
    assert entry is not None
    on_discord = same_words(expected, key, entry.session_id)
    agent.release.set()  # type: ignore[union-attr]

    slack_agent = held()
    (tmp_path / "slack").mkdir()
    async with running(
        tmp_path / "slack", "socket", slack='slash_command = "/chatlane"', agent=slack_agent
    ) as sb:
        assert await sb.deliver(message_event("one", channel=DM))
        assert await sb.deliver(message_event("two", channel=DM))
        skey = await one_running_one_waiting(sb.runtime, slack_agent)
        slash = await sb.command("status", channel=DM)
        assert await sb.deliver(message_event("/status", channel=DM))
        [typed] = await sb.fake.wait_for(
            lambda: [m for m in sb.fake.shown(DM) if m.startswith(STATUS_HEAD)] or None
        )
        assert slash == typed == describe_status(await sb.runtime.gateway.status(skey))
        sentry = await sb.runtime.store.get(skey)
        assert sentry is not None
        assert same_words(slash, skey, sentry.session_id) == on_discord
        slack_agent.release.set()  # type: ignore[union-attr]
