"""`Gateway.stop`, the one door for `/stop`: what a stop cancels, what it keeps, and the
store's stop counter that carries a stop to the gateway running the turn (two gateways
on one store here; tests/bots/test_stop.py does it with two real processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bots.testing import Replies, SlowStreamAgent, eventually
from core.agents.base import Agent
from core.config import Config, QueueSettings
from core.door.commands import STOP_SENT_TEXT, STOPPED_HERE_TEXT
from core.door.gateway import Gateway
from core.model.keys import SessionKey
from core.model.messages import Inbound
from tests.core.conftest import Gateways

Factory = Callable[..., Gateway]
KEY = SessionKey("agent:main:test:alice:general")


@pytest.fixture
def make_gateway(gateways: Gateways) -> Factory:
    def make(agent: Agent, **queue: object) -> Gateway:
        settings = QueueSettings(**{"stop_poll_s": 0.05, **queue})  # type: ignore[arg-type]
        return gateways(Config(queue=settings), agent)

    return make


def msg(text: str, n: list[int] = [0]) -> Inbound:  # noqa: B006
    n[0] += 1
    return Inbound("test", "alice", "general", text, message_id=f"s{n[0]}")


async def test_stop_cancels_the_running_turn_and_the_messages_behind_it_still_get_theirs(
    make_gateway: Factory,
) -> None:
    agent = SlowStreamAgent(60, 0.02)
    gw = make_gateway(agent)
    first, second, confirm = Replies(), Replies(), Replies()
    await gw.submit(msg("first"), first)
    await gw.submit(msg("second"), second)
    await agent.streaming.wait()
    await gw.submit(msg("/stop"), confirm)
    async with asyncio.timeout(10):
        await second.done.wait()
    assert [(r.kind, r.text) for r in confirm.replies] == [("notice", STOPPED_HERE_TEXT)]
    assert [r.kind for r in first.replies] == ["stopped"]
    assert [(r.kind, r.text) for r in second.replies] == [("answer", agent.text_for(1, "second"))]
    history = [m.content for m in agent.turns[-1].history]
    assert history == ["first"], "the stopped message stays in memory; its partial answer does not"


async def test_stop_with_nothing_running_here_asks_the_store_and_says_so(make_gateway: Factory) -> None:
    gw = make_gateway(SlowStreamAgent())
    before = await gw.store.stop_requests(KEY)
    assert await gw.stop(KEY) is False
    assert await gw.store.stop_requests(KEY) == before + 1
    assert await gw.stop_text(KEY) == STOP_SENT_TEXT


async def test_a_stop_taken_by_another_gateway_on_the_store_stops_the_turn_running_here(
    make_gateway: Factory,
) -> None:
    agent = SlowStreamAgent(60, 0.05)
    running, other = make_gateway(agent), make_gateway(SlowStreamAgent())
    asked = Replies()
    await running.submit(msg("long answer please"), asked)
    await agent.streaming.wait()
    assert await other.stop(KEY) is False  # not running there: passed on through the store
    await eventually(lambda: asked.replies, timeout=5)
    assert [r.kind for r in asked.replies] == ["stopped"]


async def test_a_stop_from_before_the_turn_began_does_not_stop_it(make_gateway: Factory) -> None:
    agent = SlowStreamAgent(10, 0.02)
    gw = make_gateway(agent)
    await gw.stop(KEY)  # nothing running: an old request in the store
    asked = Replies()
    await gw.submit(msg("now answer"), asked)
    async with asyncio.timeout(10):
        await asked.done.wait()
    assert [r.kind for r in asked.replies] == ["answer"]
