"""Reservation: what `Reserver.resolve` costs, and proof it mints once under contention.

Per backend (files; Redis when `--redis-url` is given or `redis-server` is installed):
  hot resolve      resolve of a key whose entry exists and is fresh (the common case)
  durable mint     resolve of a new key: lock, re-read, mint, persist (fsync for files)
  turn commit      a turn's store work on a stored key: turn lock, resolve, one fenced
                   commit of two records (durable), release
  same-key burst   N concurrent resolves of one new key in one process: mints must be 1
  distinct mints   mints/s over many new keys, resolved concurrently
  4 processes      4 OS processes resolve the same 100 new keys at once: 100 sessions
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.common import Options, Stores, StoreSpec, bench_key, redis_url, scratch, timed_us
from bench.report import Report
from core.conversation.reserver import Reserver
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import TurnCommit
from core.store.base import SessionStore

HOT_TARGET_US = 100.0
MINT_TARGET_MS = 2.0
DISTINCT_CONCURRENCY = 64
PROCESSES = 4
WORKER_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Sizes:
    hot_keys: int
    hot_resolves: int
    mints: int
    burst: int
    distinct: int
    shared_keys: int

    @classmethod
    def of(cls, opts: Options) -> Sizes:
        if opts.quick:
            return cls(hot_keys=20, hot_resolves=300, mints=50, burst=200, distinct=300, shared_keys=20)
        return cls(hot_keys=100, hot_resolves=5000, mints=1000, burst=1000, distinct=10_000, shared_keys=100)


async def run(opts: Options) -> Report:
    report = Report("reserve")
    sizes = Sizes.of(opts)
    with scratch(opts, "reserve") as root, redis_url(opts) as url:
        backends = [Stores("files", root)]
        if url is not None:
            backends.append(Stores("redis", root, url))
            report.note(f"redis: {'--redis-url' if opts.redis_url else 'local redis-server, free port'}")
        else:
            report.note("redis: skipped (no --redis-url and no redis-server on PATH)")
        for stores in backends:
            try:
                await _backend(report, stores, sizes, opts.runs)
            finally:
                stores.cleanup()
    report.note(
        f"sizes: hot {sizes.hot_resolves} resolves over {sizes.hot_keys} keys; "
        f"{sizes.mints} sequential mints; "
        f"burst {sizes.burst}; {sizes.distinct} distinct keys at concurrency {DISTINCT_CONCURRENCY}; "
        f"{PROCESSES} processes x {sizes.shared_keys} shared keys; {opts.runs} runs of each repeated part"
    )
    return report


async def _backend(report: Report, stores: Stores, sizes: Sizes, runs: int) -> None:
    b = stores.backend
    hot, mint, commit = await _latencies(stores.fresh(), sizes)
    report.metric(f"{b}: hot resolve", "us", hot, HOT_TARGET_US)
    report.metric(f"{b}: durable mint", "ms", [x / 1000 for x in mint], MINT_TARGET_MS)
    report.metric(f"{b}: turn commit", "ms", [x / 1000 for x in commit])

    burst_ms: list[float] = []
    rates: list[float] = []
    contend_ms: list[float] = []
    for r in range(runs):
        burst_ms.append(await _same_key_burst(report, stores.fresh(), sizes.burst, f"{b} run {r + 1}"))
        rates.append(await _distinct(report, stores.fresh(), sizes.distinct, f"{b} run {r + 1}"))
        contend_ms.append(await _contend(report, stores.fresh(), sizes.shared_keys, f"{b} run {r + 1}"))
    report.metric(f"{b}: {sizes.burst} same-key resolves", "ms", burst_ms)
    report.metric(f"{b}: mints/s ({sizes.distinct} keys)", "/s", rates, better="higher")
    report.metric(f"{b}: {PROCESSES} procs x {sizes.shared_keys} keys", "ms", contend_ms)


async def _latencies(spec: StoreSpec, sizes: Sizes) -> tuple[list[float], list[float], list[float]]:
    """Per-call microseconds: resolves of existing fresh keys, of new keys, and turns' commits."""
    store = spec.open()
    try:
        reserver = Reserver(store)
        keys = [bench_key(f"hot{i}") for i in range(sizes.hot_keys)]
        for k in keys:
            await reserver.resolve(k)
        for k in keys:  # warm: thread pool started, files in the page cache
            await reserver.resolve(k)
        hot = [await timed_us(reserver.resolve(keys[i % len(keys)])) for i in range(sizes.hot_resolves)]
        mint = [await timed_us(reserver.resolve(bench_key(f"new{i}"))) for i in range(sizes.mints)]
        commit = [await timed_us(_turn(store, reserver, keys[i % len(keys)])) for i in range(sizes.mints)]
        return hot, mint, commit
    finally:
        await store.close()


async def _turn(store: SessionStore, reserver: Reserver, key: SessionKey) -> None:
    async with store.lock_turn(key) as lease:
        entry, _ = await reserver.resolve(key)
        now = time.time()
        records = [ChatMessage("user", "hello", now), ChatMessage("assistant", "echo: hello", now)]
        await store.commit(
            TurnCommit(lease, entry.session_id, uuid.uuid4().hex, records, now, entry.turns + 1)
        )


async def _same_key_burst(report: Report, spec: StoreSpec, n: int, label: str) -> float:
    store = spec.open()
    try:
        reserver = Reserver(store)
        key = bench_key("burst")
        t0 = time.perf_counter()
        results = await asyncio.gather(*(reserver.resolve(key) for _ in range(n)))
        ms = (time.perf_counter() - t0) * 1000
        ids = {e.session_id for e, _ in results}
        stored = await store.get(key)
        report.check(
            f"{label}: {n} concurrent same-key resolves mint once",
            reserver.mints == 1 and len(ids) == 1 and stored is not None and stored.session_id in ids,
            f"mints={reserver.mints}, session ids={len(ids)}",
        )
        return ms
    finally:
        await store.close()


async def _distinct(report: Report, spec: StoreSpec, n: int, label: str) -> float:
    store = spec.open()
    try:
        reserver = Reserver(store)
        todo = iter(range(n))
        ids: set[str] = set()

        async def worker() -> None:
            for i in todo:
                entry, _ = await reserver.resolve(bench_key(f"d{i}"))
                ids.add(entry.session_id)

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(DISTINCT_CONCURRENCY):
                tg.create_task(worker())
        rate = n / (time.perf_counter() - t0)
        report.check(
            f"{label}: {n} distinct keys, {n} sessions",
            reserver.mints == n and len(ids) == n,
            f"mints={reserver.mints}, distinct ids={len(ids)}",
        )
        return rate
    finally:
        await store.close()


async def _contend(report: Report, spec: StoreSpec, n_keys: int, label: str) -> float:
    """Wall time (ms) for PROCESSES processes to resolve the same new keys at once."""
    keys = [str(bench_key(f"shared{i}")) for i in range(n_keys)]
    results = await asyncio.to_thread(_run_workers, spec, keys)
    per_key: dict[str, set[str]] = {k: set() for k in keys}
    mints = 0
    for mapping, minted, _ in results:
        mints += minted
        for k, sid in mapping.items():
            per_key[k].add(sid)
    store = spec.open()
    try:
        stored = (await store.list()).entries
    finally:
        await store.close()
    agree = all(len(s) == 1 for s in per_key.values())
    matches = all(per_key[e.key] == {e.session_id} for e in stored if e.key in per_key)
    report.check(
        f"{label}: {PROCESSES} processes on {n_keys} shared keys make {n_keys} sessions",
        len(results) == PROCESSES and agree and matches and mints == n_keys and len(stored) == n_keys,
        f"sessions stored={len(stored)}, mints={mints}, every process saw one id per key={agree}",
    )
    return max(r[2] for r in results) if results else float("nan")


Result = tuple[dict[str, str], int, float]


def _run_workers(spec: StoreSpec, keys: list[str]) -> list[Result]:
    """Start the processes, let them open their stores, then release them together."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    out: Any = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(spec, keys, seed, ready, go, out), daemon=True)
        for seed in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    results: list[Result] = []
    try:
        for _ in procs:
            if not ready.acquire(timeout=WORKER_TIMEOUT_S):
                raise RuntimeError("a contention worker did not start")
        t0 = time.perf_counter()
        go.set()
        for _ in procs:
            try:
                mapping, minted = out.get(timeout=WORKER_TIMEOUT_S)
            except queue.Empty:
                break
            results.append((mapping, minted, (time.perf_counter() - t0) * 1000))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return results


def _worker(spec: StoreSpec, keys: list[str], seed: int, ready: Any, go: Any, out: Any) -> None:
    out.put(asyncio.run(_contend_one(spec, keys, seed, ready, go)))


async def _contend_one(
    spec: StoreSpec, keys: list[str], seed: int, ready: Any, go: Any
) -> tuple[dict[str, str], int]:
    store = spec.open()
    try:
        reserver = Reserver(store)
        order = [SessionKey(k) for k in keys]
        random.Random(seed).shuffle(order)
        await store.get(order[0])  # thread pool / connection up before the start
        ready.release()
        await asyncio.to_thread(go.wait)
        results = await asyncio.gather(*(reserver.resolve(k) for k in order))
        return {e.key: e.session_id for e, _ in results}, reserver.mints
    finally:
        await store.close()
