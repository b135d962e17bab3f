"""Redis: a process cut off from Redis for longer than its owner lease, while another
process adopts its items. Exactly one answer stands, finished in place; the cut-off
process says nothing and stops editing what it streamed.

The cut-off process reaches Redis through a TCP proxy the test stalls (bytes wait,
sockets stay open: nothing raises by itself), the other connects directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bots.testing import Board, RedisServer, SlowStreamAgent, eventually, unique_prefix
from core.config import Config, QueueSettings, StoreSettings
from core.door.gateway import Gateway
from core.model import Inbound, SessionKey
from core.store.redis.store import RedisStore
from tests.faults.tcp_proxy import TcpProxy, proxy_to

KEY = SessionKey("agent:main:test:alice:general")
LEASE_S = 2.0


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    async with proxy_to(redis_server.port) as p:
        yield p


async def test_a_process_cut_off_past_its_lease_gives_its_item_up_and_one_answer_stands(
    redis_server: RedisServer, proxy: TcpProxy
) -> None:
    prefix = unique_prefix()
    config = Config(queue=QueueSettings(adopt_every_s=0.2))

    async def store(url: str) -> RedisStore:
        settings = StoreSettings(backend="redis", url=url, prefix=prefix, turn_lock_ttl_s=LEASE_S)
        return await asyncio.to_thread(RedisStore.from_settings, settings, None)  # a blocking PING

    board = Board()
    slow = SlowStreamAgent(pieces=400, gap_s=0.05)  # ~20 s: still streaming when cut off
    first = Gateway(config, await store(proxy.url), slow)
    second = Gateway(config, await store(redis_server.url), SlowStreamAgent(pieces=4, gap_s=0.01))
    try:
        for gw in (first, second):
            gw.targets.register("test", board.responder)
            gw.start()
        inbound = Inbound("test", "alice", "general", "r1", message_id="m-r1")
        target = board.target(inbound)
        await first.submit(inbound, board.responder(target), target=target)
        await asyncio.wait_for(slow.streaming.wait(), 20)
        item = (await second.store.inbox.items(KEY)).pending[0]
        await eventually(lambda: _answer_noted(second, item.item_id), timeout=10)
        post = next(iter(board.posts))

        proxy.stall()  # first is cut off from Redis; its lease runs out, second adopts
        await eventually(lambda: len(board.answers("m-r1")) == 1, timeout=30)
        answer = board.answers("m-r1")[0]
        assert board.posts[post] == answer.text  # finished in place by second
        seen = board.posts[post]
        proxy.resume()
        # first notices, gives the item up, and is idle again (it says nothing).
        await eventually(lambda: first.lanes.waiting(KEY) == (0, False), timeout=30)
        scans = first.resumer.scans
        await eventually(lambda: first.resumer.scans >= scans + 3, timeout=30)
        assert board.replies["m-r1"] == [answer]  # no failure, no second answer
        assert board.posts == {post: seen}  # no later edit, no second post
        entry = await second.store.get(KEY)
        assert entry is not None
        records = await second.store.tail(entry.session_id, 100)
        assert [r.content for r in records if r.role == "user"] == ["r1"]
        assert [r.content for r in records if r.role == "assistant"] == [answer.text]
        assert (await second.store.inbox.items(KEY)).pending == []
    finally:
        proxy.resume()
        for gw in (first, second):
            await gw.close(timeout=5)
            await gw.store.close()


async def _answer_noted(gw: Gateway, item_id: str) -> bool:
    """The first process stored where its answer streams (the adopter rewrites it there)."""
    view = await gw.store.inbox.items(KEY)
    return any(i.item_id == item_id and i.answer_ids for i in view.pending)
