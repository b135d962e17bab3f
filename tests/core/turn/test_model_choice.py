"""`/model` in the gateway: a command with a place in the conversation's lane, so it
applies exactly between the messages sent before and after it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bots.testing.agents import RecordingAgent, Replies
from core.config import AgentSettings, Config
from core.door.gateway import Gateway
from core.model.messages import Inbound
from core.store.files.store import FileStore
from core.turn.model_choice import parse_command


async def test_model_applies_between_the_messages_around_it_even_while_a_turn_runs(tmp_path: Path) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()  # the first turn is still running when the rest arrive
    store = FileStore(tmp_path / "state")
    gw = Gateway(Config(agent=AgentSettings(models=("small", "big"))), store, agent)
    inboxes = [Replies() for _ in range(4)]
    for i, text in enumerate(["first", "/model big", "second", "/model"]):
        await gw.submit(Inbound("test", "alice", "general", text, f"m{i}"), inboxes[i])
        if i == 0:
            await asyncio.wait_for(agent.started.wait(), 5)
    agent.release.set()
    async with asyncio.timeout(10):
        for inbox in inboxes:
            await inbox.done.wait()
    await gw.close()
    await store.close()
    assert [t.model for t in agent.turns] == [None, "big"]
    assert [t.new_messages[0].content for t in agent.turns] == ["first", "second"]
    assert inboxes[1].replies[-1].kind == "notice"
    assert inboxes[3].replies[-1].text.startswith("This conversation uses big.")


async def test_model_is_an_ordinary_message_for_an_agent_without_models(tmp_path: Path) -> None:
    agent = RecordingAgent()
    store = FileStore(tmp_path / "state")
    gw = Gateway(Config(), store, agent)
    inbox = Replies()
    await gw.submit(Inbound("test", "alice", "general", "/model big", "m1"), inbox)
    await asyncio.wait_for(inbox.done.wait(), 5)
    await gw.close()
    await store.close()
    assert inbox.replies[-1].kind == "answer" and agent.turns[0].new_messages[0].content == "/model big"


def test_the_command_word_is_matched_whole_and_keeps_the_name_as_written() -> None:
    assert parse_command("  /MODEL   Big-1 ", "/model") == "Big-1"
    assert parse_command("/model", "/model") == ""
    assert parse_command("/models", "/model") is None
    assert parse_command("/model x", "") is None
