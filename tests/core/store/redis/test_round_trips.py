"""Round trips of a turn on the Redis store (issue 28), counted at a TCP proxy between a
real `Gateway` and a real redis-server: what the hot path costs, whatever the load. And
what the cuts lean on: the commit lets go of the lock, the lock reads the stop counter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bots.testing import RedisServer, Replies, unique_prefix
from core.agents.echo import EchoAgent
from core.config import Config, StoreSettings
from core.conversation.reserver import Reserver, new_session_id
from core.door.gateway import Gateway
from core.model.keys import SessionKey
from core.model.messages import ChatMessage, Inbound
from core.model.sessions import TurnCommit
from core.store.redis.entries import digest
from core.store.redis.store import RedisStore
from tests.faults.tcp_proxy import TcpProxy, proxy_to

KEY = SessionKey("agent:main:test:alice:general")


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    async with proxy_to(redis_server.port) as p:
        yield p


def settings(url: str) -> StoreSettings:
    return StoreSettings(backend="redis", url=url, prefix=unique_prefix())


async def _turn(gateway: Gateway, user: str, text: str) -> None:
    replies = Replies()
    await gateway.submit(Inbound("test", user, "general", text, new_session_id()[:12]), replies)
    async with asyncio.timeout(20):
        await replies.done.wait()
    assert [r.kind for r in replies.replies] == ["answer"]


async def test_a_turn_is_two_round_trips_and_a_conversations_first_turn_three(proxy: TcpProxy) -> None:
    """Lock (with the entry, the last commits and the stop counter) and commit (which lets
    go of the lock); a first turn adds its session's mint. Requests that name the key or
    its session are counted, so the inbox's own timers do not blur the count."""
    store = await asyncio.to_thread(RedisStore.from_settings, settings(proxy.url), None)  # a blocking PING
    gateway = Gateway(Config(), store, EchoAgent())
    key = SessionKey("agent:main:test:bob:general")
    try:
        await _turn(gateway, "warm", "load every script once")  # EVALSHA, NOSCRIPT, LOAD

        def sent(session: bytes | None = None) -> int:
            hashed = digest(key).encode()
            return sum(hashed in r or (session is not None and session in r) for r in proxy.requests)

        await _turn(gateway, "bob", "first")
        first = sent()
        entry = await store.get(key)
        assert entry is not None
        session = entry.session_id.encode()
        before = sent(session)
        await _turn(gateway, "bob", "second")
        later = sent(session) - before
    finally:
        await gateway.close(5)
        await store.close()
    assert (first, later) == (3, 2)


async def test_a_stored_commit_lets_go_of_the_lock_before_the_block_ends(redis_server: RedisServer) -> None:
    """Another host takes the key's lock at once after the commit, not after a release
    (nor a TTL: 30 s); the first holder's block end leaves that new lock alone."""
    s = settings(redis_server.url)
    a, b = RedisStore.from_settings(s, None), RedisStore.from_settings(s, None)
    b_holds, b_done = asyncio.Event(), asyncio.Event()
    tokens: list[int] = []

    async def b_turn() -> None:
        async with b.lock_turn(KEY) as taken:
            tokens.append(taken.token)
            b_holds.set()
            await b_done.wait()

    try:
        async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
            async with a.lock_turn(KEY) as lease:
                entry, _ = await Reserver(a).resolve(KEY)
                records = [ChatMessage("user", "x", 1.0)]
                await a.commit(TurnCommit(lease, entry.session_id, new_session_id(), records, 1.0, 1))
                tg.create_task(b_turn())
                async with asyncio.timeout(2):
                    await b_holds.wait()
            with redis_server.client() as r:
                assert r.exists(b.names.lock(KEY)) == 1, "b's lock outlives a's block"
            b_done.set()
        assert tokens == [lease.token + 1]
    finally:
        await a.close()
        await b.close()


async def test_the_stop_baseline_is_read_with_the_lock(redis_server: RedisServer) -> None:
    """A `/stop` sent (from another host) after the lock was taken but before the turn
    reads its baseline is seen as a change by the turn's next poll: it stops that turn."""
    s = settings(redis_server.url)
    a, b = RedisStore.from_settings(s, None), RedisStore.from_settings(s, None)
    try:
        await b.request_stop(KEY)  # an earlier turn's stop: in the baseline
        async with a.lock_turn(KEY):
            await b.request_stop(KEY)
            baseline = await a.stop_requests(KEY)
            polled = await a.stop_requests(KEY)
        assert (baseline, polled) == (1, 2)
    finally:
        await a.close()
        await b.close()
