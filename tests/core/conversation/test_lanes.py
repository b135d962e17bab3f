"""Lanes at shutdown: every running turn ends, even one whose first cancel was lost."""

from __future__ import annotations

import asyncio

import pytest

import core.conversation.lanes as lanes_module
from core.config import QueueSettings
from core.conversation.lanes import Lanes, Pending
from core.model import Inbound, Reply, SessionKey
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
