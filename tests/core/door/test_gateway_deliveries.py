"""The gateway's door checks: platform deliveries answered once, `[limits]`, arrival order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bots.testing import RecordingAgent, Replies
from core.config import Config, LimitsSettings
from core.door.gateway import Gateway
from core.door.limits import SLOW_DOWN_TEXT
from core.model.messages import Inbound
from core.store.files.store import FileStore
from tests.core.conftest import Gateways

Factory = Callable[..., Gateway]


class SlowFirstCheckStore(FileStore):
    """A real file store whose first delivery check is slow (a slow disk or network hop),
    so the checks of later messages finish first."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.checks = 0

    async def mark_delivered(self, ids: Sequence[str], window_s: float) -> int:
        self.checks += 1
        if self.checks == 1:
            await asyncio.sleep(0.3)
        return await super().mark_delivered(ids, window_s)


@pytest.fixture
def make_gateway(gateways: Gateways) -> Factory:
    def make(agent: RecordingAgent | None = None, store: FileStore | None = None, **limits: int) -> Gateway:
        return gateways(Config(limits=LimitsSettings(**limits)), agent, store)

    return make


def msg(text: str, n: int, user: str = "alice") -> Inbound:
    return Inbound("slack", user, "C1", text, message_id=f"{n}.0")


async def test_a_message_delivered_to_two_gateways_on_one_store_is_answered_once(
    make_gateway: Factory,
) -> None:
    one, two = make_gateway(), make_gateway()
    inboxes = [Replies() for _ in range(4)]
    copies = [
        (one, [("retry", "event:E1"), ("twin", "message:C1:1.0")]),
        (two, [("retry", "event:E1"), ("twin", "message:C1:1.0")]),
        (two, [("retry", "event:E2"), ("twin", "message:C1:1.0")]),
        (one, [("retry", "event:E2"), ("twin", "message:C1:1.0")]),
    ]
    await asyncio.gather(
        *(gw.submit(msg("hi", 1), inbox, delivery=d) for (gw, d), inbox in zip(copies, inboxes, strict=True))
    )
    async with asyncio.timeout(10):
        while not any(i.replies for i in inboxes):
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert [len(i.replies) for i in inboxes].count(1) == 1
    assert sum(len(i.replies) for i in inboxes) == 1
    dropped = sum(
        gw.metrics.registry.get_sample_value(
            "chatlane_deliveries_deduplicated_total", {"platform": "slack", "reason": reason}
        )
        or 0
        for gw in (one, two)
        for reason in ("retry", "twin")
    )
    assert dropped == 3


async def test_messages_reach_their_lane_in_arrival_order_when_checks_finish_out_of_order(
    make_gateway: Factory, tmp_path: Path
) -> None:
    agent = RecordingAgent()
    gw = make_gateway(agent, SlowFirstCheckStore(tmp_path / "state"))
    inboxes = [Replies() for _ in range(5)]
    tasks = [
        asyncio.create_task(gw.submit(msg(f"m{n}", n), inbox, delivery=[("replay", f"message:{n}")]))
        for n, inbox in enumerate(inboxes)
    ]
    await asyncio.gather(*tasks)
    async with asyncio.timeout(10):
        for inbox in inboxes:
            await inbox.done.wait()
    said = [m.content for turn in agent.turns for m in turn.new_messages]
    assert said == ["m0", "m1", "m2", "m3", "m4"]


async def test_a_sender_over_the_limit_hears_slow_down_once_and_nothing_is_stored(
    make_gateway: Factory,
) -> None:
    agent = RecordingAgent()
    gw = make_gateway(agent, per_minute=5)
    inboxes = [Replies() for _ in range(8)]
    for n, inbox in enumerate(inboxes):
        await gw.submit(msg(f"m{n}", n), inbox)
    async with asyncio.timeout(10):
        for inbox in inboxes:
            await inbox.done.wait()
    kinds = [i.replies[0].kind for i in inboxes]
    assert kinds == ["answer"] * 5 + ["limited"] * 3
    assert [i.replies[0].text for i in inboxes[5:]] == [SLOW_DOWN_TEXT, "", ""]
    entry = await gw.store.get(gw.key_for(msg("x", 0)))
    assert entry is not None
    stored = await gw.store.tail(entry.session_id, 100)
    assert [m.content for m in stored if m.role == "user"] == ["m0", "m1", "m2", "m3", "m4"]
    assert gw.metrics.registry.get_sample_value("chatlane_rate_limited_total", {"platform": "slack"}) == 3
    other = Replies()
    await gw.submit(msg("hello", 99, user="bob"), other)
    await asyncio.wait_for(other.done.wait(), 10)
    assert other.replies[0].kind == "answer"
