"""The turn pipeline and its lanes: order, memory, queue modes, failures, bounded state."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bots.testing import RecordingAgent, Replies, eventually
from core.config import Config, QueueSettings
from core.conversation.lanes import DROPPED_TEXT
from core.door.gateway import Gateway
from core.model.keys import SessionKey
from core.model.messages import Inbound
from core.store.files.store import FileStore
from tests.core.conftest import Gateways

Factory = Callable[..., Gateway]


@pytest.fixture
def make_gateway(gateways: Gateways) -> Factory:
    def make(agent: RecordingAgent | None = None, **queue: object) -> Gateway:
        return gateways(Config(queue=QueueSettings(**queue)), agent)  # type: ignore[arg-type]

    return make


def msg(text: str, user: str = "alice", channel: str = "general", n: list[int] = [0]) -> Inbound:  # noqa: B006
    n[0] += 1
    return Inbound("test", user, channel, text, message_id=f"m{n[0]}")


async def say(gw: Gateway, *texts: str, user: str = "alice") -> list[Replies]:
    inboxes = []
    for text in texts:
        inbox = Replies()
        await gw.submit(msg(text, user), inbox)
        inboxes.append(inbox)
    return inboxes


async def answered(*inboxes: Replies) -> None:
    async with asyncio.timeout(20):
        for inbox in inboxes:
            await inbox.done.wait()


async def test_20_concurrent_same_key_messages_are_one_session_with_turns_1_to_20(
    make_gateway: Factory,
) -> None:
    gw = make_gateway()
    inboxes = [Replies() for _ in range(20)]
    async with asyncio.timeout(30):
        await asyncio.gather(*(gw.submit(msg(f"q{i}"), inboxes[i]) for i in range(20)))
    await answered(*inboxes)
    replies = [inbox.replies[0] for inbox in inboxes]
    assert {r.session_id for r in replies} == {replies[0].session_id}
    assert [r.turn for r in replies] == list(range(1, 21))
    assert all(f"turn {i + 1} " in r.text for i, r in enumerate(replies))
    assert gw.reserver.mints == 1


async def test_a_followup_waits_for_the_running_turn_and_sees_it(make_gateway: Factory) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gw = make_gateway(agent)
    (first,) = await say(gw, "what is 2+2?")
    await asyncio.wait_for(agent.started.wait(), 5)
    (second,) = await say(gw, "and times 3?")
    assert second.queued == 1
    assert len(agent.turns) == 1  # the follow-up did not start a turn of its own yet
    agent.release.set()
    await answered(first, second)
    assert second.replies[0].session_id == first.replies[0].session_id
    seen = [m.content for m in agent.turns[1].history]
    assert seen[0] == "what is 2+2?" and seen[1].startswith("echo: what is 2+2?")
    assert agent.most_running == 1


async def test_collect_answers_everything_that_arrived_meanwhile_in_one_turn(make_gateway: Factory) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gw = make_gateway(agent, mode="collect", debounce_ms=20)
    (first,) = await say(gw, "one")
    await asyncio.wait_for(agent.started.wait(), 5)
    later = await say(gw, "two", "three", "four")
    agent.release.set()
    await answered(first, *later)
    assert len(agent.turns) == 2
    assert [m.content for m in agent.turns[1].new_messages] == ["two", "three", "four"]
    assert [i.replies[0].kind for i in later] == ["merged", "merged", "answer"]
    assert later[-1].replies[0].text.startswith("echo: two / three / four")


async def test_interrupt_cancels_the_running_turn_and_keeps_its_message(make_gateway: Factory) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gw = make_gateway(agent, mode="interrupt")
    (first,) = await say(gw, "write an essay")
    await asyncio.wait_for(agent.started.wait(), 5)
    (second,) = await say(gw, "actually, a haiku")
    agent.release.set()
    await answered(first, second)
    assert first.replies[0].kind == "merged"  # its partial answer was never sent
    assert second.replies[0].kind == "answer"
    last = agent.turns[-1]
    assert [m.content for m in last.new_messages] == ["write an essay", "actually, a haiku"]
    entry = await gw.store.get(gw.key_for(msg("x")))
    assert entry is not None
    stored = await gw.store.tail(entry.session_id, 10)
    assert [(m.content, m.interrupted) for m in stored if m.role == "user"] == [
        ("write an essay", True),
        ("actually, a haiku", False),
    ]
    assert sum(m.role == "assistant" for m in stored) == 1


@pytest.mark.parametrize(("drop", "lost"), [("oldest", "w0"), ("newest", "w3")])
async def test_past_the_cap_a_message_is_dropped_and_its_sender_told(
    make_gateway: Factory, drop: str, lost: str
) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gw = make_gateway(agent, cap=3, drop=drop)
    (running,) = await say(gw, "busy")
    await asyncio.wait_for(agent.started.wait(), 5)
    waiting = await say(gw, "w0", "w1", "w2", "w3")
    dropped = [i for i in waiting if i.replies and i.replies[0].kind == "dropped"]
    assert len(dropped) == 1 and dropped[0].replies[0].text == DROPPED_TEXT
    assert dropped[0] is waiting[int(lost[1])]
    agent.release.set()
    await answered(running, *waiting)
    answered_texts = [m.content for t in agent.turns for m in t.new_messages]
    assert lost not in answered_texts and len(answered_texts) == 4


async def test_agent_failure_gives_a_plain_message_and_keeps_the_user_message(
    make_gateway: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    agent = RecordingAgent()
    agent.fail_on = {"boom"}
    gw = make_gateway(agent)
    with caplog.at_level(logging.ERROR):
        (failed,) = await say(gw, "boom")
        await answered(failed)
    reply = failed.replies[0]
    assert reply.kind == "failure" and reply.text == gw.config.agent.failure_message
    assert "secret detail" not in reply.text and "secret detail" in caplog.text
    (after,) = await say(gw, "still there?")
    await answered(after)
    assert [m.content for m in agent.turns[-1].history if m.role == "user"] == ["boom"]


async def test_different_keys_run_concurrently_up_to_the_limit(make_gateway: Factory) -> None:
    agent = RecordingAgent(delay_s=0.05)
    gw = make_gateway(agent, max_concurrent_turns=3)
    inboxes = [inbox for u in range(8) for inbox in await say(gw, "hi", user=f"user{u}")]
    await answered(*inboxes)
    assert agent.most_running == 3


async def test_idle_lanes_are_forgotten(make_gateway: Factory) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gw = make_gateway(agent)
    inboxes = [inbox for u in range(200) for inbox in await say(gw, "hi", user=f"user{u}")]
    await eventually(lambda: len(gw.lanes) == 200)  # one lane per conversation while busy
    agent.release.set()
    await answered(*inboxes)
    await eventually(lambda: not len(gw.lanes) and not gw.reserver.active_locks)
    assert (len(gw.lanes), gw.reserver.active_locks) == (0, 0)


async def test_a_reset_command_starts_a_new_session_and_keeps_the_old_transcript(
    make_gateway: Factory,
) -> None:
    gw = make_gateway()
    first = await say(gw, "hello", "again")
    await answered(*first)
    old = first[-1].replies[0].session_id
    (notice,) = await say(gw, "/new")
    await answered(notice)
    assert notice.replies[0].kind == "notice"
    (fresh,) = await say(gw, "hi")
    await answered(fresh)
    assert fresh.replies[0].session_id != old and fresh.replies[0].turn == 1
    assert len(await gw.store.tail(old, 10)) == 4


async def test_shutdown_lets_running_turns_finish_within_the_timeout(make_gateway: Factory) -> None:
    agent = RecordingAgent(delay_s=0.1)
    gw = make_gateway(agent)
    inboxes = [inbox for u in range(5) for inbox in await say(gw, "hi", user=f"u{u}")]
    await gw.close(timeout=10)
    assert all(i.replies and i.replies[0].kind == "answer" for i in inboxes)


async def test_shutdown_past_the_timeout_cancels_and_keeps_the_messages(make_gateway: Factory) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()  # never set: the turn would run forever
    gw = make_gateway(agent)
    _running, waiting = await say(gw, "long one", "queued one")
    await asyncio.wait_for(agent.started.wait(), 5)
    await gw.close(timeout=0.1)
    assert waiting.replies[0].kind == "shutdown"
    key = SessionKey(gw.key_for(msg("x")))
    entry = await gw.store.get(key)
    assert entry is not None
    stored = await gw.store.tail(entry.session_id, 10)
    assert [(m.content, m.interrupted) for m in stored] == [("long one", True)]
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith(("turn ", "lane "))] == []


@pytest.mark.parametrize("mode", ["followup", "collect", "interrupt"])
async def test_a_reset_keeps_its_place_in_the_conversation(make_gateway: Factory, mode: str) -> None:
    """Messages sent before /new are answered in the old session, messages after it in
    the new one, even when all of them wait behind a running turn."""
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gw = make_gateway(agent, mode=mode)
    (running,) = await say(gw, "first")
    await asyncio.wait_for(agent.started.wait(), 5)
    before, reset, after = await say(gw, "before", "/new", "after")
    agent.release.set()
    await answered(running, before, reset, after)
    assert reset.replies[0].kind == "notice"
    assert before.replies[0].session_id == running.replies[0].session_id
    assert after.replies[0].session_id == reset.replies[0].session_id != running.replies[0].session_id
    assert after.replies[0].turn == 1


async def test_a_reset_through_the_door_waits_for_the_messages_sent_before_it(make_gateway: Factory) -> None:
    """`Gateway.reset` (slash commands, the CLI) queues in the lane like the text `/new`:
    a message sent before it is answered in the old session, not overtaken."""
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gw = make_gateway(agent)
    running, before = await say(gw, "first", "before")
    await asyncio.wait_for(agent.started.wait(), 5)
    key = gw.key_for(msg("x"))
    reset = Replies()
    await gw.reset(key, reset)
    (after,) = await say(gw, "after")
    status = await gw.status(key)
    assert (status.running, status.waiting) == (True, 3)
    agent.release.set()
    await answered(running, before, reset, after)
    assert reset.replies[0].kind == "notice"
    assert before.replies[0].session_id == running.replies[0].session_id
    assert after.replies[0].session_id == reset.replies[0].session_id != before.replies[0].session_id
    assert (await gw.status(key)).entry == await gw.store.get(key)


async def test_the_gateway_applies_the_configured_freshness_policy(tmp_path: Path) -> None:
    """The gateway builds its reserver from `session.reset`: an idle session goes stale."""
    now = [time.time()]
    config = Config.model_validate({"session": {"reset": {"mode": "idle", "idle_minutes": 30}}})
    store = FileStore(tmp_path / "state")
    gw = Gateway(config, store, RecordingAgent(), clock=lambda: now[0])
    try:
        (first,) = await say(gw, "hello")
        await answered(first)
        now[0] += 31 * 60
        (second,) = await say(gw, "again")
        await answered(second)
        assert second.replies[0].session_id != first.replies[0].session_id
    finally:
        await gw.close(timeout=5)
        await store.close()
