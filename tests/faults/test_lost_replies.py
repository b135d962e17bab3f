"""A lost reply from Redis, for every Lua script and MULTI the Redis store runs (issue 29).

redis-py sends a command again after a connection error. When the first attempt reached
Redis and only its reply was lost, the retry meets its own effect. A TCP proxy between
the store and a real redis-server forwards the command and swallows exactly ONE reply
(then closes the connection); the store's operation must still give the answer it would
have given without the loss, and leave the store as one attempt would. Each case counts
what would go wrong for a user: a message never answered (lost), one answered twice or a
write done twice (double), a key or request that stays blocked (stuck).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bots.testing import eventually
from bots.testing.process import ChatlaneProcess, write_config
from bots.testing.redis import RedisServer, unique_prefix
from core.config import StoreSettings
from core.conversation.reserver import Reserver
from core.door.dedupe import Requests
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import SessionEntry, TurnCommit
from core.ops import Metrics
from core.store.redis.store import RedisStore
from tests.faults.tcp_proxy import TcpProxy, proxy_to
from tests.support.http import COMPLETIONS, body

TTL_S = 3.0
HOUR = 3600.0


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True)
class World:
    store: RedisStore
    proxy: TcpProxy
    direct: aioredis.Redis
    """A client that bypasses the proxy: what is really stored."""
    prefix: str
    key: SessionKey


Problem = tuple[str, str] | None
"""(lost | double | stuck, what happened), or None when the store did the right thing."""
Case = Callable[[World], Awaitable[Problem]]


async def mark(w: World) -> Problem:
    w.proxy.drop_reply_to(f"{w.prefix}:delivery:{sha('evt-1')}".encode())
    seen = await w.store.mark_delivered(["evt-1", "msg-1"], HOUR)
    return None if seen == 0 else ("lost", f"a first delivery was taken for a duplicate ({seen})")


async def claim(w: World) -> Problem:
    requests = Requests(w.store, HOUR, Metrics())
    w.proxy.drop_reply_to(b":request:")
    got = await requests.claim("http:token:order-42", "fp")
    return None if got.new else ("stuck", "the request's own claim came back as someone else's")


async def count(w: World) -> Problem:
    w.proxy.drop_reply_to(f"{w.prefix}:limit:{sha('dave')}:m".encode())
    verdicts = [await w.store.count_message("dave", 2, 0)]
    verdicts.append(await w.store.count_message("dave", 2, 0))
    if verdicts == ["allowed", "allowed"]:
        return None
    return ("double", f"one message counted twice: {verdicts}")


async def commit(w: World) -> Problem:
    async with w.store.lock_turn(w.key) as lease:
        entry, _ = await Reserver(w.store).resolve(w.key)
        commit_id = uuid.uuid4().hex
        w.proxy.drop_reply_to(commit_id.encode())
        await w.store.commit(
            TurnCommit(lease, entry.session_id, commit_id, [ChatMessage("user", "x", 1.0)], 1.0, 1)
        )
    stored = await w.direct.lrange(f"{w.prefix}:transcript:{entry.session_id}", 0, -1)  # type: ignore[misc]
    if await w.direct.exists(w.store.names.lock(w.key)):
        return ("stuck", "the lock stayed taken after the commit that lets go of it")
    return None if len(stored) == 1 else ("double", f"{len(stored)} commits stored")


async def acquire(w: World) -> Problem:
    async with w.store.lock_turn(w.key) as first:
        pass
    w.proxy.drop_reply_to(w.store.names.lock(w.key).encode())
    began = time.monotonic()
    async with w.store.lock_turn(w.key) as lease:
        waited = time.monotonic() - began
    if waited > TTL_S / 2:
        return ("stuck", f"the key waited {waited:.1f} s for a lock its own request held")
    if lease.token != first.token + 1:
        return ("double", f"fencing token {lease.token} after {first.token}")
    return None


async def renew(w: World) -> Problem:
    async with w.store.lock_turn(w.key):
        w.proxy.drop_reply_to(w.store.names.lock(w.key).encode())
        deadline = time.monotonic() + TTL_S
        while not w.proxy.dropped and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(TTL_S / 3)  # the renewal after the lost one went through too
    return None  # a lost lease raises Fenced out of the block


async def release(w: World) -> Problem:
    async with w.store.lock_turn(w.key):
        w.proxy.drop_reply_to(w.store.names.lock(w.key).encode())
    held = await w.direct.exists(w.store.names.lock(w.key))
    return None if not held else ("stuck", "the lock stayed taken after its release")


async def reserve(w: World) -> Problem:
    w.proxy.drop_reply_to(b"EXEC", w.store.names.entry(w.key).encode())
    entry, minted = await Reserver(w.store).resolve(w.key)
    stored = await w.store.get(w.key)
    if stored is None or stored.session_id != entry.session_id:
        return ("lost", "the reserved session is not the stored one")
    return None if minted else ("double", "a session it minted was reported as found (minted twice?)")


async def mint_with_lock(w: World) -> Problem:
    async with w.store.lock_turn(w.key):
        w.proxy.drop_reply_to(b"EVALSHA", w.store.names.entry(w.key).encode())
        entry, minted = await Reserver(w.store).resolve(w.key)
    stored = await w.store.get(w.key)
    if stored is None or stored.session_id != entry.session_id:
        return ("lost", "the minted session is not the stored one")
    return None if minted else ("double", "a session it minted was reported as found (minted twice?)")


async def reset(w: World) -> Problem:
    minted: list[SessionEntry] = []
    reserver = Reserver(w.store)
    await reserver.resolve(w.key)

    def mint(k: SessionKey) -> SessionEntry:
        minted.append(reserver.mint(k))
        return minted[-1]

    w.proxy.drop_reply_to(b"EXEC", w.store.names.entry(w.key).encode())
    entry = await w.store.reset(w.key, mint)
    stored = await w.store.get(w.key)
    if stored is None or stored.session_id != entry.session_id:
        return ("lost", "the reset's session is not the stored one")
    return None if len(minted) == 1 else ("double", f"one reset minted {len(minted)} sessions")


async def set_model(w: World) -> Problem:
    entry, _ = await Reserver(w.store).resolve(w.key)
    w.proxy.drop_reply_to(b"EXEC", w.store.names.entry(w.key).encode())
    got = await w.store.set_model(w.key, entry.session_id, "big")
    stored = await w.store.get(w.key)
    ok = got is not None and got.model == "big" and stored is not None and stored.model == "big"
    return None if ok else ("lost", f"the model choice was not kept ({got})")


async def delete(w: World) -> Problem:
    entry, _ = await Reserver(w.store).resolve(w.key)
    w.proxy.drop_reply_to(b"EXEC", w.store.names.entry(w.key).encode())
    removed = await w.store.delete(w.key, entry.session_id)
    gone = await w.store.get(w.key) is None
    if not gone:
        return ("lost", "the entry was not deleted")
    return None if removed else ("double", "a delete that removed the entry said it found nothing")


async def stop(w: World) -> Problem:
    w.proxy.drop_reply_to(w.store.names.stop(w.key).encode())
    await w.store.request_stop(w.key)
    n = await w.store.stop_requests(w.key)
    return None if n == 1 else ("double", f"one /stop counted {n} times")


async def blobs(w: World) -> Problem:
    entry, _ = await Reserver(w.store).resolve(w.key)
    w.proxy.drop_reply_to(f"{w.prefix}:blob-order:{entry.session_id}".encode())
    await w.store.put_blobs(entry.session_id, {sha("a"): b"a", sha("b"): b"b"})
    order = await w.direct.lrange(f"{w.prefix}:blob-order:{entry.session_id}", 0, -1)  # type: ignore[misc]
    got = await w.store.get_blobs(entry.session_id, [sha("a"), sha("b")])
    if len(got) != 2:
        return ("lost", "a blob was not stored")
    return None if len(order) == 2 else ("double", f"{len(order)} digests listed for 2 blobs")


async def finish(w: World) -> Problem:
    requests = Requests(w.store, HOUR, Metrics())
    mine = await requests.claim("r-finish", "fp")
    w.proxy.drop_reply_to(b":request:")
    await requests.finish("r-finish", mine.owner, "fp", b'{"a": 1}')
    later = await requests.claim("r-finish", "fp")
    return None if later.answer == b'{"a": 1}' else ("stuck", "the stored answer is not there")


async def release_claim(w: World) -> Problem:
    requests = Requests(w.store, HOUR, Metrics())
    mine = await requests.claim("r-release", "fp")
    w.proxy.drop_reply_to(b":request:")
    await requests.release("r-release", mine.owner)
    return None if (await requests.claim("r-release", "fp")).new else ("stuck", "a released claim stayed")


async def renew_claim(w: World) -> Problem:
    requests = Requests(w.store, HOUR, Metrics())
    mine = await requests.claim("r-renew", "fp", 1.0)
    w.proxy.drop_reply_to(b":request:")
    kept = await w.store.renew_request("r-renew", mine.owner, 1.0)
    return None if kept else ("stuck", "the owner lost its lease to its own renewal")


CASES: dict[str, Case] = {
    "delivery mark (script)": mark,
    "request claim (script)": claim,
    "sender limits count (script)": count,
    "turn commit (script)": commit,
    "turn lock acquire (script)": acquire,
    "turn lock renew (script)": renew,
    "turn lock release (script)": release,
    "reserve (WATCH/MULTI)": reserve,
    "first session under the turn lock (script)": mint_with_lock,
    "reset (WATCH/MULTI)": reset,
    "set_model (WATCH/MULTI)": set_model,
    "delete (WATCH/MULTI)": delete,
    "stop request": stop,
    "blobs put (script)": blobs,
    "request finish": finish,
    "request release": release_claim,
    "request lease renewal": renew_claim,
}


@contextlib.asynccontextmanager
async def _world(redis_server: RedisServer, proxy: TcpProxy) -> AsyncIterator[World]:
    prefix = unique_prefix()
    settings = StoreSettings(backend="redis", url=proxy.url, prefix=prefix, turn_lock_ttl_s=TTL_S)
    store = await asyncio.to_thread(RedisStore.from_settings, settings, None)  # a blocking PING
    direct = aioredis.Redis(port=redis_server.port)
    try:
        yield World(store, proxy, direct, prefix, SessionKey(f"agent:main:http:{prefix}:api"))
    finally:
        await store.close()
        await direct.aclose()


@pytest.mark.parametrize("name", list(CASES))
async def test_a_lost_reply_neither_loses_doubles_nor_blocks(redis_server: RedisServer, name: str) -> None:
    """The one operation, its reply swallowed once: the same answer and the same state as
    without the loss (no message lost, nothing done twice, no key or request stuck)."""
    async with proxy_to(redis_server.port) as proxy, _world(redis_server, proxy) as w:
        problem = await CASES[name](w)
        assert proxy.dropped == 1, "exactly one reply was swallowed (else this proved nothing)"
        print(f"{name}: {problem or 'ok'}")
        assert problem is None, problem


# ------------------------------------------------------------------ a dead owner
@pytest.mark.slow
async def test_a_request_whose_owner_died_mid_turn_is_answered_by_the_adopting_process(
    tmp_path: Path,
) -> None:
    """Two processes on one state folder. A owns an `Idempotency-Key` request and is
    killed -9 mid-turn: a retry on B gets 409 while A lives, then, once B adopted A's
    inbox item and answered it under the claim, 200; not a 409 for the whole window."""
    lease = 0.6  # A still runs this long after the retry's first 409
    extra = "idempotency_wait_s = 0.2\n[agent]\necho_delay_ms = 3000\n"
    state = tmp_path / "state"
    procs = [
        await ChatlaneProcess.start(write_config(tmp_path / n, extra, state=state), tmp_path / f"{n}.log")
        for n in ("a", "b")
    ]
    a, b = procs
    request = body("run me once", user="erin")
    headers = {"Idempotency-Key": "erin-1"}
    try:
        async with aiohttp.ClientSession() as http:

            async def post(p: ChatlaneProcess) -> tuple[int, Any]:
                async with http.post(p.url + COMPLETIONS, json=request, headers=headers) as resp:
                    return resp.status, await resp.json()

            first = asyncio.create_task(post(a))
            # A's claim: the files store's marker of the request (core/store/files/deliveries.py)
            caller = "token-" + hashlib.sha256(b"").hexdigest()[:32]
            marker = sha(f"r:http:{caller}:erin-1")
            await eventually(lambda: (state / "deliveries" / marker[:2] / marker).exists(), timeout=10)
            assert (await post(b))[0] == 409
            await asyncio.sleep(lease * 2)
            assert (await post(b))[0] == 409, "a live owner keeps its request"
            await a.kill()
            killed = time.monotonic()
            assert first.done() or await asyncio.gather(first, return_exceptions=True)
            status, answer = await eventually(lambda: _answered(post(b)), timeout=20)
            took = time.monotonic() - killed
        print(f"\ndead owner: retry answered {status} {took:.1f} s after the kill")
        assert answer["choices"][0]["message"]["content"].startswith("echo: run me once")
    finally:
        for p in procs:
            await p.terminate()


async def _status(call: Awaitable[tuple[int, Any]], want: int) -> bool:
    return (await call)[0] == want


async def _answered(call: Awaitable[tuple[int, Any]]) -> tuple[int, Any] | None:
    status, answer = await call
    assert status in (200, 409), (status, answer)
    return (status, answer) if status == 200 else None
