"""The conversation commands' registry (core/door/commands.py) on a real gateway and file
store: which text is which command, what each does in the lane or at once, the texts a
user reads, and `/status` (what the conversation has stored, running and waiting)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bots.testing import RecordingAgent, Replies, SlowStreamAgent, eventually
from core.config import AgentSettings, Config, SessionSettings
from core.door.commands import (
    BUSY_TEXT,
    COMMANDS,
    IDLE_TEXT,
    MODEL,
    MODEL_QUEUED_TEXT,
    NEW,
    NO_SESSION_TEXT,
    OUTSIDE_THREADS_TEXT,
    RESET_FAILED_TEXT,
    RESET_QUEUED_TEXT,
    STATUS,
    STOP,
    STOPPED_HERE_TEXT,
    Commands,
    describe_status,
)
from core.door.gateway import Gateway
from core.model.keys import SessionKey
from core.model.messages import Inbound
from core.turn.model_choice import MODEL_SET_TEXT
from core.turn.runner import RESET_TEXT
from tests.core.conftest import Gateways

KEY = SessionKey("agent:main:test:alice:general")


def msg(text: str, n: list[int] = [0]) -> Inbound:  # noqa: B006
    n[0] += 1
    return Inbound("test", "alice", "general", text, message_id=f"c{n[0]}")


def held() -> RecordingAgent:
    """An agent whose turns wait until the test sets `release`."""
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    return agent


async def ask(gw: Gateway, text: str) -> Replies:
    """Send `text` as a message and wait for its one reply."""
    replies = Replies()
    await gw.submit(msg(text), replies)
    await eventually(lambda: replies.replies)
    return replies


# ------------------------------------------------------------------ the registry
def test_the_registry_has_one_command_per_name_and_every_platform_name_finds_it(gateways: Gateways) -> None:
    commands = gateways(Config()).commands
    assert commands.names() == ["new", "reset", "stop", "model", "status"]
    assert [commands.get(n) for n in ("new", "RESET", "stop", "model", "Status")] == [
        NEW,
        NEW,
        STOP,
        MODEL,
        STATUS,
    ]
    assert commands.get("dance") is None
    assert commands.usage("/chatlane") == "Usage: /chatlane new | reset | stop | model [NAME] | status"


def test_text_commands_are_the_configured_words_and_a_longer_text_is_a_message(gateways: Gateways) -> None:
    config = Config(
        session=SessionSettings(reset_commands=("/fresh",), status_command="/how"),
        agent=AgentSettings(models=("small", "big")),
    )
    commands = gateways(config).commands
    assert commands.find(KEY, " /FRESH ") == (NEW, "")
    assert commands.find(KEY, "/new") is None  # not configured here
    assert commands.find(KEY, "/fresh please") is None
    assert commands.find(KEY, "/stop") == (STOP, "")
    assert commands.find(KEY, "/how") == (STATUS, "")
    assert commands.find(KEY, "/status") is None
    assert commands.find(KEY, "/Model Big-1") == (MODEL, "Big-1")  # the argument keeps its case
    assert commands.find(KEY, "/model") == (MODEL, "")
    assert commands.find(KEY, "hello") is None


def test_model_is_a_message_for_an_agent_without_choices(gateways: Gateways) -> None:
    commands = gateways(Config()).commands
    assert commands.find(KEY, "/model big") is None


async def test_a_disabled_status_word_goes_to_the_agent(gateways: Gateways) -> None:
    agent = RecordingAgent()
    gw = gateways(Config(session=SessionSettings(status_command="")), agent)
    replies = await ask(gw, "/status")
    assert replies.replies[0].kind == "answer"
    assert [m.content for m in agent.turns[0].new_messages] == ["/status"]


async def test_an_unknown_command_is_refused_at_the_door(gateways: Gateways) -> None:
    gw = gateways(Config())
    with pytest.raises(ValueError, match="no conversation command"):
        await gw.command(KEY, "dance", "", Replies())
    with pytest.raises(ValueError, match="no conversation command"):
        await gw.commands.answer(KEY, "dance")


# ------------------------------------------------------------------ /status
async def test_status_before_any_message_says_there_is_no_session(gateways: Gateways) -> None:
    gw = gateways(Config())
    replies = await ask(gw, "/status")
    expected = NO_SESSION_TEXT.format(key=KEY, activity=IDLE_TEXT.format(waiting=0))
    assert [(r.kind, r.text) for r in replies.replies] == [("notice", expected)]
    assert gw.agent.turns == []  # type: ignore[attr-defined]  # the agent never saw it


async def test_status_says_what_runs_and_waits_the_same_by_text_and_by_command(gateways: Gateways) -> None:
    agent = held()
    gw = gateways(Config(), agent)
    first, second, third = Replies(), Replies(), Replies()
    await gw.submit(msg("one"), first)
    await gw.submit(msg("two"), second)
    await gw.submit(msg("three"), third)
    await agent.started.wait()  # the turn has reserved its session: the agent runs
    await eventually(lambda: gw.lanes.waiting(KEY) == (2, True))
    by_text = (await ask(gw, "/status")).replies
    answer = await gw.commands.answer(KEY, "status")
    entry = await gw.store.get(KEY)
    assert entry is not None
    busy = BUSY_TEXT.format(waiting=2)
    assert [r.text for r in by_text] == [answer.text]
    assert answer.text.endswith(f"Session `{entry.session_id}`: 0 turns\n{busy}")
    assert answer.private
    agent.release.set()  # type: ignore[union-attr]
    await eventually(lambda: third.replies)
    await eventually(lambda: gw.lanes.waiting(KEY) == (0, False))
    idle = (await ask(gw, "/status")).replies[0].text
    assert idle.endswith(f"Session `{entry.session_id}`: 3 turns\n{IDLE_TEXT.format(waiting=0)}")
    assert idle == describe_status(await gw.status(KEY))


# ------------------------------------------------------------------ /new, /model, /stop
async def test_a_reset_waits_its_turn_and_the_platform_hears_it_is_queued(gateways: Gateways) -> None:
    agent = held()
    gw = gateways(Config(), agent)
    gw.commands = Commands(gw, tuple(dataclasses.replace(c, wait_s=0.05) for c in COMMANDS))
    before = Replies()
    await gw.submit(msg("before"), before)
    await agent.started.wait()
    answer = await gw.commands.answer(KEY, "reset")
    assert (answer.text, answer.private) == (RESET_QUEUED_TEXT, True)
    agent.release.set()  # type: ignore[union-attr]
    await eventually(lambda: before.replies)
    after = await ask(gw, "after")
    assert after.replies[0].turn == 1, "the reset ran after 'before' was answered"
    assert after.replies[0].session_id != before.replies[0].session_id


async def test_a_reset_answered_in_time_says_it_was_done(gateways: Gateways) -> None:
    gw = gateways(Config())
    await ask(gw, "hello")
    answer = await gw.commands.answer(KEY, "new")
    assert answer.text == RESET_TEXT
    assert (await gw.store.get(KEY)) is not None


async def test_a_shared_conversation_hears_resets_openly_but_status_privately(gateways: Gateways) -> None:
    gw = gateways(Config(session=SessionSettings(scope="channel")))
    key = gw.key_for(msg(""))
    assert not (await gw.commands.answer(key, "new")).private
    assert (await gw.commands.answer(key, "status")).private


async def test_model_switches_by_name_and_by_text_in_order(gateways: Gateways) -> None:
    agent = held()
    config = Config(agent=AgentSettings(models=("small", "big")))
    gw = gateways(config, agent)
    gw.commands = Commands(gw, tuple(dataclasses.replace(c, wait_s=0.05) for c in COMMANDS))
    running = Replies()
    await gw.submit(msg("hello"), running)
    await agent.started.wait()
    assert (await gw.commands.answer(KEY, "model", "big")).text == MODEL_QUEUED_TEXT
    agent.release.set()  # type: ignore[union-attr]
    await eventually(lambda: running.replies)
    # From here on nothing runs ahead of the commands: wait as long as a loaded machine needs.
    gw.commands = Commands(gw, tuple(dataclasses.replace(c, wait_s=30.0) for c in COMMANDS))
    assert (await gw.commands.answer(KEY, "model", "big")).text.endswith("already uses big.")
    assert (await ask(gw, "/model small")).replies[0].text == MODEL_SET_TEXT.format(model="small")


async def test_stop_acts_at_once_whichever_form_asks(gateways: Gateways) -> None:
    agent = SlowStreamAgent(60, 0.02)
    gw = gateways(Config(), agent)
    talking = Replies()
    await gw.submit(msg("talk"), talking)
    await agent.streaming.wait()
    answer = await gw.commands.answer(KEY, "stop", outside_threads=True)
    assert answer.text == STOPPED_HERE_TEXT + OUTSIDE_THREADS_TEXT.format(word="/stop")
    await eventually(lambda: talking.replies)
    assert [r.kind for r in talking.replies] == ["stopped"]


async def test_a_command_the_gateway_cannot_take_gets_its_failure_text(gateways: Gateways) -> None:
    gw = gateways(Config())
    await gw.close(timeout=1)
    answer = await gw.commands.answer(KEY, "new")
    assert answer.text == RESET_FAILED_TEXT
