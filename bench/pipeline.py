"""End to end: `chatlane run` (HTTP API, echo agent, file store) under load from another process.

Each run starts a fresh server subprocess on a free port and a load generator process
(`bench.loadgen`, aiohttp client) that sends, after a warm-up of 20 one-message
conversations:
  main    200 requests over 50 keys (X-Session-Key header) at concurrency 10; a key's
          next message is sent once its previous one was answered, keys overlap freely
  burst   100 requests on one key, all at once (they queue in that key's lane)
It reports requests/s and latency as the client saw them, the server's peak RSS
(VmHWM), and checks correctness from the replies and from the store.

Each run also drives the floor server (`bench.floor`: an aiohttp handler that appends
each turn to one log with group-committed fdatasync) with the same main plan, in the
same run, and reports chatlane / floor: absolute figures move by a third on these
machines, the ratio much less.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Options, scratch, server_config, sessions_list, start_server
from bench.loadgen import run_plan
from bench.report import Report
from bench.verify import Conversation, check_replies, check_store
from bots.testing.redis import RedisServer, find_redis_server
from core.model.keys import build_key

RPS_TARGET = 1000.0
P99_TARGET_MS = 20.0
FLOOR_RPS_RATIO_TARGET = 0.40
FLOOR_P99_RATIO_TARGET = 4.0
RSS_TARGET_MB = 150.0
WARMUP = 20


@dataclass(frozen=True, slots=True)
class Sizes:
    requests: int
    keys: int
    concurrency: int
    burst: int

    @classmethod
    def of(cls, opts: Options) -> Sizes:
        return cls(40, 10, 10, 20) if opts.quick else cls(200, 50, 10, 100)


def http_key(user: str) -> str:
    return str(build_key("main", "http", user, "api"))


async def run(opts: Options) -> Report:
    report = Report("pipeline")
    sz = Sizes.of(opts)
    rps: list[float] = []
    latency: list[float] = []
    burst_s: list[float] = []
    burst_latency: list[float] = []
    peak_mb: list[float] = []
    floor_rps: list[float] = []
    floor_latency: list[float] = []
    rps_ratio: list[float] = []
    keyed_rps: list[float] = []
    keyed_ratio: list[float] = []
    keyed_latency: list[float] = []
    p99_ratio: list[float] = []
    for r in range(opts.runs):
        with scratch(opts, "pipeline") as root:
            label = f"run {r + 1}"
            # The default cap (20 waiting per conversation) would drop most of the burst, by design.
            config = server_config(root, queue_cap=sz.burst + 20)
            server = await start_server(config)
            try:
                base = server.base_url
                warm = [(http_key(f"warm{i}"), f"warm {i}") for i in range(WARMUP)]
                main = [
                    (http_key(f"load{i % sz.keys}"), f"k{i % sz.keys}-m{i // sz.keys + 1}")
                    for i in range(sz.requests)
                ]
                keyed = [
                    (http_key(f"keyed{i % sz.keys}"), f"k{i % sz.keys}-m{i // sz.keys + 1}")
                    for i in range(sz.requests)
                ]
                burst = [(http_key("burst"), f"burst-{j}") for j in range(sz.burst)]
                floor = await _floor(root, main, warm, sz.concurrency)
                got_warm = await run_plan(_plan(base, warm, 10, ordered=True))
                got_main = await run_plan(_plan(base, main, sz.concurrency, ordered=True))
                got_keyed = await run_plan(
                    _plan(base, keyed, sz.concurrency, ordered=True, idempotency=f"r{r}")
                )
                got_burst = await run_plan(_plan(base, burst, sz.burst, ordered=False))
                status = server.status()
            finally:
                code = await server.stop()
            report.check(f"{label}: server stopped cleanly on SIGTERM", code == 0, f"exit code {code}")
            rps.append(sz.requests / got_main["wall_s"])
            run_latency = [row[1] for row in got_main["results"] if row]
            latency.extend(run_latency)
            floor_rps.append(sz.requests / floor["wall_s"])
            run_floor_latency = [row[1] for row in floor["results"] if row]
            floor_latency.extend(run_floor_latency)
            rps_ratio.append(rps[-1] / floor_rps[-1])
            keyed_rps.append(sz.requests / got_keyed["wall_s"])
            keyed_ratio.append(keyed_rps[-1] / floor_rps[-1])
            keyed_latency.extend(row[1] for row in got_keyed["results"] if row)
            p99_ratio.append(_p99(run_latency) / _p99(run_floor_latency))
            burst_s.append(got_burst["wall_s"] * 1000)
            burst_latency.extend(row[1] for row in got_burst["results"] if row)
            peak_mb.append(status["VmHWM"] / 1024)
            expected: dict[str, Conversation] = {}
            expected |= check_replies(report, f"{label} warm-up", warm, got_warm["results"], ordered=True)
            expected |= check_replies(report, f"{label} main", main, got_main["results"], ordered=True)
            expected |= check_replies(report, f"{label} keyed", keyed, got_keyed["results"], ordered=True)
            expected |= check_replies(report, f"{label} burst", burst, got_burst["results"], ordered=False)
            listed = await asyncio.to_thread(sessions_list, config)
            await check_store(report, label, expected, listed, root / "state", transcript_sample=1000)
    report.metric(
        f"main: requests/s ({sz.requests} req, {sz.keys} keys, c={sz.concurrency})",
        "/s",
        rps,
        RPS_TARGET,
        "higher",
    )
    report.metric("main: latency", "ms", latency, P99_TARGET_MS, on="p99")
    report.metric("floor: requests/s (same plan, same run)", "/s", floor_rps, better="higher")
    report.metric("floor: latency", "ms", floor_latency)
    report.metric("chatlane / floor requests/s", "x", rps_ratio, FLOOR_RPS_RATIO_TARGET, "higher")
    report.metric("chatlane / floor p99 latency", "x", p99_ratio, FLOOR_P99_RATIO_TARGET)
    report.metric(
        "keyed: requests/s (main plan + Idempotency-Key: each message in the durable inbox)",
        "/s",
        keyed_rps,
        better="higher",
    )
    report.metric("keyed: latency", "ms", keyed_latency)
    report.metric("keyed / floor requests/s", "x", keyed_ratio, better="higher")
    report.metric(f"burst: {sz.burst} same-key requests, total", "ms", burst_s)
    report.metric("burst: latency", "ms", burst_latency)
    report.metric("server peak RSS (VmHWM)", "MB", peak_mb, RSS_TARGET_MB)
    report.note(
        f"{opts.runs} runs, a fresh server each; latency pooled over runs as the client saw it; "
        f"warm-up of {WARMUP} one-message conversations not counted; queue.cap = {sz.burst + 20}"
    )
    await _redis_part(report, opts, sz)
    return report


async def _redis_part(report: Report, opts: Options, sz: Sizes) -> None:
    """The main plan with the Redis store (redis-server with appendfsync always), each run
    beside a floor run of its own; skipped with --quick or without redis-server."""
    binary = find_redis_server()
    if opts.quick or binary is None:
        report.note("redis: skipped (--quick, or no redis-server on PATH)")
        return
    rps: list[float] = []
    latency: list[float] = []
    ratio: list[float] = []
    p99_ratio: list[float] = []
    with RedisServer.start(binary, durable=True) as redis:
        for r in range(opts.runs):
            with scratch(opts, "pipeline-redis") as root:
                warm = [(http_key(f"rwarm{r}-{i}"), f"warm {i}") for i in range(WARMUP)]
                main = [
                    (http_key(f"rload{r}-{i % sz.keys}"), f"k{i % sz.keys}-m{i // sz.keys + 1}")
                    for i in range(sz.requests)
                ]
                floor = await _floor(root, main, warm, sz.concurrency)
                config = server_config(root, queue_cap=sz.burst + 20, redis_url=redis.url)
                server = await start_server(config)
                try:
                    got_warm = await run_plan(_plan(server.base_url, warm, 10, ordered=True))
                    got_main = await run_plan(_plan(server.base_url, main, sz.concurrency, ordered=True))
                finally:
                    await server.stop()
            label = f"redis run {r + 1}"
            check_replies(report, f"{label} warm-up", warm, got_warm["results"], ordered=True)
            check_replies(report, f"{label} main", main, got_main["results"], ordered=True)
            rps.append(sz.requests / got_main["wall_s"])
            run_latency = [row[1] for row in got_main["results"] if row]
            latency.extend(run_latency)
            floor_rps = sz.requests / floor["wall_s"]
            ratio.append(rps[-1] / floor_rps)
            p99_ratio.append(_p99(run_latency) / _p99([row[1] for row in floor["results"] if row]))
    report.metric("redis main: requests/s (appendfsync always)", "/s", rps, RPS_TARGET, "higher")
    report.metric("redis main: latency", "ms", latency, P99_TARGET_MS, on="p99")
    report.metric("redis / floor requests/s", "x", ratio, FLOOR_RPS_RATIO_TARGET, "higher")
    report.metric("redis / floor p99 latency", "x", p99_ratio, FLOOR_P99_RATIO_TARGET)


async def _floor(
    root: Path, main: list[tuple[str, str]], warm: list[tuple[str, str]], concurrency: int
) -> dict[str, Any]:
    """The main plan against the floor server (after the same warm-up); its results."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.floor", str(root / "floor.log"),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line.startswith("floor is up at "):
            raise RuntimeError(f"the floor server did not start: {line!r}")
        base = line.removeprefix("floor is up at ").strip()
        await run_plan(_plan(base, warm, 10, ordered=True))
        return await run_plan(_plan(base, main, concurrency, ordered=True))
    finally:
        proc.terminate()
        await proc.wait()


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def _plan(
    base: str, requests: list[tuple[str, str]], concurrency: int, *, ordered: bool, idempotency: str = ""
) -> dict[str, object]:
    return {
        "base_url": base,
        "concurrency": concurrency,
        "ordered_per_key": ordered,
        "requests": requests,
        "idempotency": idempotency,
    }
