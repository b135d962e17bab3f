"""Proactive sends through the gateway: a prompt is a turn in the conversation's session
marked as the operator's, a notice is said and remembered, both queue behind a running
turn; unreachable keys are refused; a retried send happens once; a reminder made at
runtime fires once. Real gateways on a real file store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bots.testing import Board, RecordingAgent, Replies, eventually
from core.config import Config, QueueSettings, SchedulerSettings
from core.door import IdempotencyConflict, Unreachable
from core.door.gateway import Gateway
from core.model import ChatMessage, Inbound, ReplyTarget, Responder, SessionKey
from core.store.files.store import FileStore
from tests.core.conftest import Gateways

HTTP_KEY = "agent:main:http:ops:api"


async def transcript(gw: Gateway, key: str) -> list[ChatMessage]:
    entry = await gw.store.get(SessionKey(key))
    return [] if entry is None else await gw.store.tail(entry.session_id, 100)


async def records(gw: Gateway, key: str, n: int) -> list[ChatMessage]:
    async def stored() -> list[ChatMessage]:
        found = await transcript(gw, key)
        return found if len(found) >= n else []

    return await eventually(stored, timeout=10)


async def test_a_prompt_is_an_operator_turn_in_the_session_and_a_follow_up_sees_it(
    gateways: Gateways,
) -> None:
    agent = RecordingAgent()
    gw = gateways(Config(), agent)
    sent = await gw.send(HTTP_KEY, "the deploy finished; tell the team")
    stored = await records(gw, HTTP_KEY, 2)
    assert [(r.role, r.origin, r.message_id) for r in stored] == [
        ("user", "operator", sent.message_id),
        ("assistant", "", ""),
    ]
    person = Replies()
    await gw.submit(Inbound("http", "ops", "api", "what did you say?", "m1"), person)
    await eventually(lambda: person.replies)
    history = agent.turns[-1].history
    assert (history[0].content, history[0].origin) == ("the deploy finished; tell the team", "operator")


async def test_a_notice_is_said_verbatim_and_remembered_as_the_bots(gateways: Gateways) -> None:
    agent = RecordingAgent()
    gw = gateways(Config(), agent)
    said = Replies()
    gw.targets.register("slack", lambda target: said)
    key = "agent:main:slack:*:C1:1700000000.000100"
    await gw.send(key, "Maintenance at 18:00.", "notice")
    await eventually(lambda: said.replies)
    assert [(r.kind, r.text) for r in said.replies] == [("notice", "Maintenance at 18:00.")]
    assert not agent.turns  # no agent ran
    stored = await records(gw, key, 1)
    assert [(r.role, r.content, r.origin) for r in stored] == [
        ("assistant", "Maintenance at 18:00.", "operator")
    ]


async def test_the_answer_goes_to_the_target_named_by_the_key(gateways: Gateways) -> None:
    gw = gateways(Config(), RecordingAgent())
    targets: list[ReplyTarget] = []
    inbox = Replies()

    def factory(target: ReplyTarget) -> Responder:
        targets.append(target)
        return inbox

    gw.targets.register("slack", factory)
    gw.targets.register("discord", factory)
    await gw.send("agent:main:slack:*:C1:1700000000.000100", "summarize")
    await gw.send("agent:main:discord:*:42", "summarize")
    await eventually(lambda: len(inbox.replies) == 2)
    assert targets == [ReplyTarget("slack", "C1", "1700000000.000100"), ReplyTarget("discord", "42")]
    assert {r.kind for r in inbox.replies} == {"answer"}


async def test_a_send_queues_behind_the_running_turn(gateways: Gateways) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    gw = gateways(Config(), agent)
    person = Replies()
    await gw.submit(Inbound("http", "ops", "api", "a long question", "m1"), person)
    await agent.started.wait()
    await gw.send(HTTP_KEY, "said meanwhile", "notice")
    await asyncio.sleep(0)
    agent.release.set()
    stored = await records(gw, HTTP_KEY, 3)
    assert [(r.role, r.origin) for r in stored] == [
        ("user", ""),
        ("assistant", ""),
        ("assistant", "operator"),
    ]


@pytest.mark.parametrize(
    "key",
    [
        "agent:main:slack:U1:*",  # scope `user`: no channel to speak in
        "agent:main:slack:*:C1",  # no Slack adapter running here
    ],
)
async def test_unreachable_keys_are_refused_before_anything_is_stored(gateways: Gateways, key: str) -> None:
    gw = gateways(Config(), RecordingAgent())
    with pytest.raises(Unreachable):
        await gw.send(key, "hello")
    with pytest.raises(ValueError, match="session key"):
        await gw.send("agent:main:slack", "hello")
    assert await gw.store.get(SessionKey(key)) is None


async def test_a_retried_send_with_the_same_idempotency_key_happens_once(
    gateways: Gateways, tmp_path: Path
) -> None:
    a = gateways(Config(), RecordingAgent())
    b = gateways(Config(), RecordingAgent(), FileStore(tmp_path / "state"))  # another process
    first = await a.send(HTTP_KEY, "once", idempotency=("req-1", "fp"))
    again = await b.send(HTTP_KEY, "once", idempotency=("req-1", "fp"))
    assert (again.duplicate, again.message_id) == (True, first.message_id)
    with pytest.raises(IdempotencyConflict):
        await b.send(HTTP_KEY, "something else", idempotency=("req-1", "other"))
    await records(a, HTTP_KEY, 2)
    await asyncio.sleep(0.2)  # a second send would have been queued by now
    assert len(await transcript(a, HTTP_KEY)) == 2


async def test_a_reminder_made_at_runtime_fires_once_across_processes(
    gateways: Gateways, tmp_path: Path
) -> None:
    config = Config(scheduler=SchedulerSettings(poll_s=0.1, lease_s=5))
    a = gateways(config, RecordingAgent())
    b = gateways(config, RecordingAgent(), FileStore(tmp_path / "state"))
    a.start_schedules()
    b.start_schedules()
    name = await a.proactive.remind(HTTP_KEY, "remember the milk", datetime.now(UTC))
    stored = await records(a, HTTP_KEY, 2)

    async def dropped() -> bool:
        return name not in await a.store.saved_schedules()

    await eventually(dropped, timeout=10)
    await asyncio.sleep(0.3)  # three more polls of each scheduler
    stored = await transcript(a, HTTP_KEY)
    assert (stored[0].role, stored[0].content) == ("user", "remember the milk")
    assert len(stored) == 2
    assert stored[0].message_id.startswith(f"{name}@")
    mark = await a.store.fire_mark(name)
    assert mark is not None and mark.outcome == "answered"


async def test_a_proactive_message_waits_in_the_inbox_and_a_restart_says_it_once(
    gateways: Gateways, tmp_path: Path
) -> None:
    """Accept = stored: a send to a Slack thread is an inbox item (kind, origin, target)
    before `send` returns; after a deploy cut it off, the next process answers the prompt
    once and says the notice once, as a notice (no agent)."""
    key = "agent:main:slack:*:C1:1700000000.000100"
    held = RecordingAgent()
    held.release = asyncio.Event()
    config = Config(queue=QueueSettings(adopt_every_s=0.2))
    first = gateways(config, held)
    board = Board("slack")
    first.targets.register("slack", board.responder)
    await first.send(key, "the deploy finished")
    await held.started.wait()
    await first.send(key, "Maintenance at 18:00.", "notice")
    other = FileStore(tmp_path / "state")  # another process's view
    try:
        view = await other.inbox.items(SessionKey(key))
        assert [(i.kind, i.inbound.origin, i.target) for i in view.pending] == [
            ("message", "operator", ReplyTarget("slack", "C1", "1700000000.000100")),
            ("notice", "operator", ReplyTarget("slack", "C1", "1700000000.000100")),
        ]
    finally:
        await other.close()
    await first.close(timeout=0)  # a deploy: the running turn is cut off
    await first.store.close()

    agent = RecordingAgent()
    second = gateways(config, agent)
    second.targets.register("slack", board.responder)
    second.start()
    await eventually(lambda: [r.kind for r in board.replies[""]].count("notice") == 1, timeout=10)
    await asyncio.sleep(0.5)  # two more inbox scans: nothing is taken again
    assert [r.kind for r in board.replies[""]] == ["answer", "notice"]
    assert [[m.content for m in t.new_messages] for t in agent.turns] == [["the deploy finished"]]
    stored = await transcript(second, key)
    assert [(r.role, r.content, r.origin) for r in stored if not r.interrupted][-2:] == [
        ("assistant", agent_answer(stored), ""),
        ("assistant", "Maintenance at 18:00.", "operator"),
    ]
    assert (await second.store.inbox.items(SessionKey(key))).pending == []


def agent_answer(records: list[ChatMessage]) -> str:
    return next(r.content for r in records if r.role == "assistant" and not r.origin)
