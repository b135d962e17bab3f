"""Thread backfill in the gateway: once per session, across processes, again after a reset."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import ClassVar

from bots.testing import RecordingAgent, Replies
from core.config import Config
from core.door.gateway import Gateway
from core.model.keys import SessionKey
from core.model.messages import ChatMessage, Inbound
from tests.core.store.test_contract import OpenStore, open_store

__all__ = ["open_store"]  # fixture used here

KEY = SessionKey("agent:main:test:alice:general")
THREAD = [ChatMessage("user", f"earlier {i}", float(i), f"h{i}", author="bob") for i in range(5)]


class HistoryInbox(Replies):
    """An adapter's responder that can read its conversation's earlier messages (slowly)."""

    reads: ClassVar[list[str]] = []

    def __init__(self, name: str, delay_s: float = 0.0) -> None:
        super().__init__()
        self.name = name
        self.delay_s = delay_s

    async def fetch_history(self) -> Sequence[ChatMessage]:
        HistoryInbox.reads.append(self.name)
        await asyncio.sleep(self.delay_s)
        return THREAD


def inbound(text: str, mid: str) -> Inbound:
    return Inbound("test", "alice", "general", text, mid)


async def test_two_processes_racing_on_a_first_message_backfill_once(open_store: OpenStore) -> None:
    HistoryInbox.reads = []
    agents = [RecordingAgent(), RecordingAgent()]
    gateways = [Gateway(Config(), await open_store(), agent) for agent in agents]
    inboxes = [HistoryInbox("A", delay_s=0.2), HistoryInbox("B", delay_s=0.2)]
    try:
        await asyncio.gather(
            *(
                gw.submit(inbound(f"hello from {i}", f"m{i}"), box)
                for i, (gw, box) in enumerate(zip(gateways, inboxes, strict=True))
            )
        )
        async with asyncio.timeout(20):
            for box in inboxes:
                await box.done.wait()
        turns = [t for a in agents for t in a.turns]
        assert len(HistoryInbox.reads) == 1
        assert sorted(t.turn for t in turns) == [1, 2]
        first = next(t for t in turns if t.turn == 1)
        second = next(t for t in turns if t.turn == 2)
        assert [m.content for m in first.history] == [m.content for m in THREAD]
        assert all(m.backfill for m in first.history)
        # The other process sees the backfill once, in memory, before the first turn's messages.
        assert [m.content for m in second.history][:5] == [m.content for m in THREAD]
        entry = await gateways[0].store.get(KEY)
        assert entry is not None
        stored = await gateways[0].store.tail(entry.session_id, 100)
        assert [m.content for m in stored if m.backfill] == [m.content for m in THREAD]
    finally:
        for gw in gateways:
            await gw.close(timeout=5)
            await gw.store.close()


async def test_a_reset_session_backfills_again_on_its_next_turn(open_store: OpenStore) -> None:
    HistoryInbox.reads = []
    gw = Gateway(Config(), await open_store(), RecordingAgent())
    try:
        for i, text in enumerate(["one", "two"]):
            box = HistoryInbox(text)
            await gw.submit(inbound(text, f"r{i}"), box)
            await asyncio.wait_for(box.done.wait(), 10)
        reset = Replies()
        await gw.reset(KEY, reset)
        await asyncio.wait_for(reset.done.wait(), 10)
        box = HistoryInbox("three")
        await gw.submit(inbound("three", "r3"), box)
        await asyncio.wait_for(box.done.wait(), 10)
        assert HistoryInbox.reads == ["one", "three"]
        assert box.replies[-1].turn == 1
    finally:
        await gw.close(timeout=5)
        await gw.store.close()


async def test_a_message_already_in_the_thread_is_not_backfilled_twice(open_store: OpenStore) -> None:
    """Slack's conversations.replies may include the triggering message itself."""

    class Including(HistoryInbox):
        async def fetch_history(self) -> Sequence[ChatMessage]:
            return [*THREAD, ChatMessage("user", "the trigger", 9.0, "trigger", author="alice")]

    agent = RecordingAgent()
    gw = Gateway(Config(), await open_store(), agent)
    try:
        box = Including("x")
        await gw.submit(inbound("the trigger", "trigger"), box)
        await asyncio.wait_for(box.done.wait(), 10)
        assert [m.content for m in agent.turns[0].history] == [m.content for m in THREAD]
        assert [m.content for m in agent.turns[0].new_messages] == ["the trigger"]
    finally:
        await gw.close(timeout=5)
        await gw.store.close()


async def test_a_message_read_by_an_earlier_backfill_is_shown_once_as_itself(open_store: OpenStore) -> None:
    """Message A was posted first, but B (later, same thread) won the turn lock first
    (another process): B's backfill read A. Before: A's own turn showed A twice (once as
    backfill, once as the new message), and so did every later turn."""
    store = await open_store()
    agents = [RecordingAgent(), RecordingAgent()]
    gateways = [Gateway(Config(), store, agent) for agent in agents]

    class WithA(HistoryInbox):
        async def fetch_history(self) -> Sequence[ChatMessage]:
            return [*THREAD, ChatMessage("user", "message A", 10.0, "A", author="alice")]

    try:
        b = WithA("B")
        await gateways[1].submit(inbound("message B", "B"), b)
        await asyncio.wait_for(b.done.wait(), 10)
        a = Replies()
        await gateways[0].submit(inbound("message A", "A"), a)
        await asyncio.wait_for(a.done.wait(), 10)
        later = Replies()
        await gateways[0].submit(inbound("and now?", "C"), later)
        await asyncio.wait_for(later.done.wait(), 10)
        [turn_b] = agents[1].turns
        turn_a, turn_c = agents[0].turns
        assert [m.content for m in turn_b.history][-1] == "message A"  # B saw A as earlier
        assert "message A" not in [m.content for m in turn_a.history]
        assert [m.content for m in turn_a.new_messages] == ["message A"]
        assert [m.content for m in turn_c.history].count("message A") == 1
    finally:
        for gw in gateways:
            await gw.close(timeout=5)
        await store.close()


async def test_after_new_the_backfill_holds_only_what_was_said_after_the_reset(open_store: OpenStore) -> None:
    """Before: the new session's first turn read the whole thread again, the exchange of
    the session `/new` had just ended included."""
    agent = RecordingAgent()
    gw = Gateway(Config(), await open_store(), agent)

    class Growing(HistoryInbox):
        """The thread: the old exchange (times before the reset), then one message said
        after it (its time: when it is read, after the reset)."""

        async def fetch_history(self) -> Sequence[ChatMessage]:
            old = [*THREAD, ChatMessage("user", "one", 7.0, "r0", author="alice")]
            return [*old, ChatMessage("user", "said after the reset", time.time(), "late", author="bob")]

    try:
        first = Growing("one")
        await gw.submit(inbound("one", "r0"), first)
        await asyncio.wait_for(first.done.wait(), 10)
        reset = Replies()
        await gw.reset(KEY, reset)
        await asyncio.wait_for(reset.done.wait(), 10)
        box = Growing("two")
        await gw.submit(inbound("two", "r1"), box)
        await asyncio.wait_for(box.done.wait(), 10)
        after = agent.turns[-1]
        assert after.turn == 1
        assert [m.content for m in after.history] == ["said after the reset"]
        before = [m.content for m in agent.turns[0].history]
        assert before == [*(m.content for m in THREAD), "said after the reset"]
    finally:
        await gw.close(timeout=5)
        await gw.store.close()
