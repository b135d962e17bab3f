"""The durable inbox at the gateway: accept = stored, restart = resumed, in order, once.

Two gateways on one state folder stand for a process and the one started after it;
answers go through `Board` (bots/testing/board.py), a fake platform answered through
stored `ReplyTarget`s, registered in `gateway.targets` like an adapter's factory.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bots.testing import Board, RecordingAgent, SlowStreamAgent, eventually
from core.config import Config, QueueSettings
from core.door.gateway import Gateway
from core.model import Inbound, SessionKey
from core.store import jsonl
from core.store.files.store import FileStore
from core.turn import POISON_TEXT
from tests.core.conftest import Gateways

KEY = SessionKey("agent:main:test:alice:general")


def msg(text: str) -> Inbound:
    return Inbound("test", "alice", "general", text, message_id=f"m-{text}")


async def send(gw: Gateway, board: Board, *texts: str) -> None:
    for text in texts:
        inbound = msg(text)
        target = board.target(inbound)
        await gw.submit(inbound, board.responder(target), target=target)


def config(**queue: object) -> Config:
    return Config(queue=QueueSettings(adopt_every_s=0.2, **queue))  # type: ignore[arg-type]


async def test_a_message_is_in_the_store_when_submit_returns(gateways: Gateways, tmp_path: Path) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()  # nothing is answered meanwhile
    gw = gateways(config(), agent)
    board = Board()
    await send(gw, board, "r1", "r2")
    other = FileStore(tmp_path / "state")  # another process's view
    try:
        view = await other.inbox.items(KEY)
        assert [i.inbound.text for i in view.pending] == ["r1", "r2"]
        assert view.pending[0].target == board.target(msg("r1"))
    finally:
        await other.close()
    agent.release.set()
    await eventually(lambda: len(board.answers("m-r2")) == 1)
    assert (await gw.store.inbox.items(KEY)).pending == []  # answered = out of the inbox


async def test_a_restart_answers_every_queued_message_once_in_order_finishing_in_place(
    gateways: Gateways, tmp_path: Path
) -> None:
    slow = SlowStreamAgent(pieces=40, gap_s=0.02)
    first = gateways(config(), slow)
    board = Board()
    first.targets.register("test", board.responder)
    first.start()
    await send(first, board, "r1", "r2", "r3")
    await asyncio.wait_for(slow.streaming.wait(), 10)
    await eventually(lambda: any(board.posts.values()))
    await first.close(timeout=0)  # a deploy that cuts the running answer off
    await first.store.close()
    assert not any(r.kind == "shutdown" for rs in board.replies.values() for r in rs)
    cut_post = next(iter(board.posts))

    second = gateways(config(), SlowStreamAgent(pieces=4, gap_s=0.001))
    second.targets.register("test", board.responder)
    second.start()
    await eventually(lambda: all(len(board.answers(f"m-{t}")) == 1 for t in ("r1", "r2", "r3")), timeout=20)
    answers = [board.answers(f"m-{t}")[0] for t in ("r1", "r2", "r3")]
    assert [a.turn for a in answers] == [1, 2, 3]
    assert len({a.session_id for a in answers}) == 1
    assert board.posts_made == 3  # r1's cut-off post was finished in place, not posted again
    assert board.posts[cut_post] == answers[0].text
    records = jsonl.read_all(second.store.layout.transcript_path(answers[0].session_id))[0]  # type: ignore[attr-defined]
    assert [r.content for r in records if r.role == "user"] == ["r1", "r2", "r3"]
    assert (await second.store.inbox.keys()) == []


async def test_new_messages_wait_for_the_resumed_ones(gateways: Gateways) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    first = gateways(config(), agent)
    board = Board()
    await send(first, board, "old1", "old2")
    await first.close(timeout=0)
    await first.store.close()
    second = gateways(config(), RecordingAgent())
    second.start()
    second.targets.register("test", board.responder)
    await send(second, board, "new")
    await eventually(lambda: len(board.answers("m-new")) == 1)
    turns = [board.answers(f"m-{t}")[0].turn for t in ("old1", "old2", "new")]
    assert turns == [1, 2, 3]


async def test_an_item_that_crashed_three_turns_is_parked_and_the_next_is_answered(
    gateways: Gateways, tmp_path: Path
) -> None:
    board = Board()
    for _ in range(3):  # three processes die while answering "poison"
        agent = RecordingAgent()
        agent.release = asyncio.Event()
        gw = gateways(config(), agent)
        gw.targets.register("test", board.responder)
        gw.start()
        if _ == 0:
            await send(gw, board, "poison", "next")
        await asyncio.wait_for(agent.started.wait(), 10)
        await gw.close(timeout=0)
        await gw.store.close()
    last = gateways(config(), RecordingAgent())
    last.targets.register("test", board.responder)
    last.start()
    await eventually(lambda: len(board.answers("m-next")) == 1, timeout=20)
    told = [r for r in board.replies["m-poison"] if r.kind == "failure"]
    assert [r.text for r in told] == [POISON_TEXT]
    assert board.answers("m-poison") == []
    view = await last.store.inbox.items(KEY)
    assert view.pending == [] and [i.inbound.text for i in view.parked] == ["poison"]


async def test_items_of_a_platform_without_an_adapter_here_stay_pending(gateways: Gateways) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    first = gateways(config(), agent)
    board = Board()
    await send(first, board, "r1")
    await first.close(timeout=0)
    await first.store.close()
    second = gateways(config(), RecordingAgent())
    second.start()  # no "test" adapter registered
    await eventually(lambda: second.resumer.scans >= 3)
    assert [i.inbound.text for i in (await second.store.inbox.items(KEY)).pending] == ["r1"]


async def test_a_busy_scan_never_takes_this_processes_own_messages_twice(gateways: Gateways) -> None:
    """The scan runs constantly while messages arrive and are answered: each message is
    still answered once and stored once (a message being stored or answered here is
    never mistaken for a leftover of a dead process)."""
    # cap above the 40 sent: on a slow machine they queue faster than they are answered,
    # and a full queue drops (and tells) by design.
    gw = gateways(Config(queue=QueueSettings(adopt_every_s=0.001, cap=100)), RecordingAgent())
    board = Board()
    gw.targets.register("test", board.responder)
    gw.start()
    texts = [f"q{i}" for i in range(40)]
    for text in texts:
        await send(gw, board, text)
    await eventually(lambda: all(board.answers(f"m-{t}") for t in texts), timeout=30)
    await eventually(lambda: gw.resumer.scans >= 5)
    assert [len(board.replies[f"m-{t}"]) for t in texts] == [1] * len(texts)
    entry = await gw.store.get(KEY)
    assert entry is not None
    records = await gw.store.tail(entry.session_id, 1000)
    assert [r.content for r in records if r.role == "user"] == texts


async def test_a_sender_no_longer_allowed_is_not_answered_after_the_restart(gateways: Gateways) -> None:
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    first = gateways(config(), agent)
    board = Board()
    await send(first, board, "r1")
    await first.close(timeout=0)
    await first.store.close()
    second = gateways(config(), RecordingAgent())
    second.start()
    second.targets.register("test", board.responder, admits=lambda inbound: inbound.user != "alice")
    await eventually(lambda: second.resumer.scans >= 2)
    assert board.replies["m-r1"] == []
    assert (await second.store.inbox.items(KEY)).pending == []  # settled, not waiting forever


async def test_an_interrupted_message_kept_in_memory_is_stored_once_after_a_crash(
    gateways: Gateways, tmp_path: Path
) -> None:
    """Interrupt mode: r2 cuts r1's turn off, which keeps r1 in memory (marked interrupted);
    the process dies during the next turn. The next process answers r1 and r2 and stores
    r1's message once: it finds r1's interrupted record by its message id."""
    agent = RecordingAgent()
    agent.release = asyncio.Event()  # every turn of the first process hangs
    first = gateways(config(mode="interrupt"), agent)
    board = Board()
    first.targets.register("test", board.responder)
    first.start()
    await send(first, board, "r1")
    await eventually(lambda: len(agent.turns) == 1)
    await send(first, board, "r2")  # interrupts r1's turn: r1 is kept as interrupted
    await eventually(lambda: len(agent.turns) == 2)  # the turn answering r1 + r2 runs
    entry = await first.store.get(KEY)
    assert entry is not None
    kept = [r for r in await first.store.tail(entry.session_id, 100) if r.role == "user"]
    assert [(r.content, r.interrupted) for r in kept] == [("r1", True)]
    await first.close(timeout=0)  # dies before that turn's commit
    await first.store.close()

    second_agent = RecordingAgent()
    second = gateways(config(mode="interrupt"), second_agent)
    second.targets.register("test", board.responder)
    second.start()
    await eventually(lambda: len(board.answers("m-r2")) == 1, timeout=20)
    records = await second.store.tail(entry.session_id, 100)
    assert [r.content for r in records if r.role == "user"] == ["r1", "r2"]
    assert [m.content for m in second_agent.turns[-1].new_messages] == ["r1", "r2"]
    assert (await second.store.inbox.items(KEY)).pending == []


async def test_items_of_an_adapter_that_registers_late_are_answered_without_a_no_adapter_line(
    gateways: Gateways, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart: another adapter registers first and the scan runs, then the items'
    own adapter registers. Until the launcher says every adapter is up, an item whose
    adapter is missing is not reported as waiting for another process; after, it is."""
    agent = RecordingAgent()
    agent.release = asyncio.Event()
    first = gateways(config(), agent)
    board = Board()
    await send(first, board, "r1")
    elsewhere = Board("elsewhere")  # a platform no adapter of the next process serves
    orphan = Inbound("elsewhere", "bob", "general", "o1", message_id="m-o1")
    await first.submit(orphan, elsewhere.responder(elsewhere.target(orphan)), target=elsewhere.target(orphan))
    await first.close(timeout=0)
    await first.store.close()

    caplog.set_level(logging.INFO, logger="chatlane.inbox")
    second = gateways(config(), RecordingAgent())
    second.start(await_adapters=True)
    second.targets.register("early", board.responder)  # a faster adapter: the scan runs
    await eventually(lambda: second.resumer.scans >= 3)
    second.targets.register("test", board.responder)
    second.adapters_started()
    await eventually(lambda: len(board.answers("m-r1")) == 1)
    waits = [r.getMessage() for r in caplog.records if "waits for a process" in r.getMessage()]
    assert not [w for w in waits if "'test'" in w]
    assert elsewhere.replies["m-o1"] == []
    # From now on an item no adapter here answers is reported, once.
    await eventually(
        lambda: [r.getMessage() for r in caplog.records if "waits for a process" in r.getMessage()] != []
    )
    scans = second.resumer.scans
    await eventually(lambda: second.resumer.scans >= scans + 3)
    waits = [r.getMessage() for r in caplog.records if "waits for a process" in r.getMessage()]
    assert len(waits) == 1 and "'elsewhere'" in waits[0]
