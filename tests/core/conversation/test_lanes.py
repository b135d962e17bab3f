"""Lanes at shutdown: every running turn ends, even one whose first cancel was lost."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import core.conversation.lanes as lanes_module
from core.config import QueueSettings
from core.conversation.lanes import Lanes, Pending
from core.model import Inbound, Reply, SessionKey
from core.ops import forget_cancels
from core.turn.responders import QuietResponder

KEY = SessionKey("agent:main:slack:u:c")


class _Told(QuietResponder):
    def __init__(self) -> None:
        self.replies: list[Reply] = []

    async def send(self, reply: Reply) -> None:
        self.replies.append(reply)


async def test_close_ends_a_turn_whose_shutdown_cancel_was_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The turn is in a Redis write when shutdown cancels it; on Python 3.11 redis-py's
    `asyncio.wait_for` drops that cancel as the write completes (CPython gh-86296), and
    the turn goes on into a model that never answers. `close` cancels it again; before,
    it waited for the turn for ever (a deploy that never exited)."""
    monkeypatch.setattr(lanes_module, "TURN_CANCEL_AGAIN_S", 0.05)
    loop = asyncio.get_running_loop()
    written = loop.create_future()
    in_write, in_model = asyncio.Event(), asyncio.Event()

    async def run_turn(key: SessionKey, batch: list[Pending]) -> None:
        in_write.set()
        try:
            await asyncio.wait_for(written, 10)
        except asyncio.CancelledError:
            written.result()  # Python 3.12+ keeps the cancel: lose it here alike
        in_model.set()
        await asyncio.Event().wait()  # the model never answers

    lanes = Lanes(run_turn, QueueSettings())
    told = _Told()
    await lanes.submit(KEY, Pending(Inbound("slack", "u", "c", "hi", "1.0"), told))
    async with asyncio.timeout(5):
        await in_write.wait()
    worker = lanes._lanes[KEY].worker
    assert worker is not None
    closing = asyncio.ensure_future(lanes.close(timeout=0))
    while not worker.cancelling():  # close cancels the worker; its next step cancels the turn ...
        await asyncio.sleep(0)
    written.set_result(None)  # ... in the step the write completes: the turn's cancel is lost
    async with asyncio.timeout(5):
        await closing
    assert in_model.is_set(), "the first cancel was not lost: this test proved nothing"
    assert [r.kind for r in told.replies] == ["shutdown"]  # the worker still told the message


async def _answered(told: _Told, n: int) -> None:
    async with asyncio.timeout(5):
        while len(told.replies) < n:
            await asyncio.sleep(0.001)


async def test_a_keys_turns_run_in_its_lane_worker_not_a_task_each() -> None:
    tasks: list[asyncio.Task[object] | None] = []

    async def run_turn(key: SessionKey, batch: list[Pending]) -> None:
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0.01)
        await batch[-1].responder.send(Reply("ok", "answer", key))

    lanes = Lanes(run_turn, QueueSettings())
    told = _Told()
    for i in range(3):
        await lanes.submit(KEY, Pending(Inbound("slack", "u", "c", f"m{i}", f"{i}.0"), told))
    worker = lanes._lanes[KEY].worker
    await _answered(told, 3)
    assert tasks == [worker] * 3


async def test_a_stopped_turn_leaves_its_worker_with_no_cancel_counted() -> None:
    """The next turn runs in the same task: a cancel left counted would make a lost
    Redis lock (which checks `uncancel() == 0`) look like a shutdown."""
    started = asyncio.Event()
    counted: list[int] = []

    async def run_turn(key: SessionKey, batch: list[Pending]) -> None:
        task = asyncio.current_task()
        assert task is not None
        counted.append(task.cancelling())
        if batch[-1].inbound.text == "slow":
            started.set()
            await asyncio.Event().wait()
        await batch[-1].responder.send(Reply("ok", "answer", key))

    lanes = Lanes(run_turn, QueueSettings())
    told = _Told()
    await lanes.submit(KEY, Pending(Inbound("slack", "u", "c", "slow", "1.0"), told))
    await lanes.submit(KEY, Pending(Inbound("slack", "u", "c", "next", "2.0"), told))
    async with asyncio.timeout(5):
        await started.wait()
    assert lanes.stop(KEY)
    await _answered(told, 2)
    assert [r.kind for r in told.replies] == ["stopped", "answer"]
    assert counted == [0, 0]


async def test_a_stop_that_came_as_the_turn_ended_does_not_stop_the_next_turn() -> None:
    """`/stop` lands while the turn's commit is out: the turn is answered. A message that
    later interrupts the next turn is answered with it, not told "Stopped."."""
    committing, stored, second = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def run_turn(key: SessionKey, batch: list[Pending]) -> None:
        text = batch[-1].inbound.text
        if text == "first":
            committing.set()
            while not stored.is_set():  # as the runner's commit: every cancel waits for it
                with contextlib.suppress(asyncio.CancelledError):
                    await stored.wait()
            forget_cancels()
        elif text == "second":
            second.set()
            await asyncio.Event().wait()
        await batch[-1].responder.send(Reply(text, "answer", key))

    lanes = Lanes(run_turn, QueueSettings(mode="interrupt"))
    told = _Told()
    await lanes.submit(KEY, Pending(Inbound("slack", "u", "c", "first", "1.0"), told))
    async with asyncio.timeout(5):
        await committing.wait()
    assert lanes.stop(KEY)
    await lanes.submit(KEY, Pending(Inbound("slack", "u", "c", "second", "2.0"), told))
    stored.set()
    async with asyncio.timeout(5):
        await second.wait()
    await lanes.submit(KEY, Pending(Inbound("slack", "u", "c", "third", "3.0"), told))
    await _answered(told, 2)
    assert [(r.kind, r.text) for r in told.replies] == [("answer", "first"), ("answer", "third")]
