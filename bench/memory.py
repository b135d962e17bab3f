"""Server memory: idle, after 10,000 sessions, after 100,000 messages — and no growth with keys seen.

One `chatlane run` subprocess (HTTP API, echo agent, file store), driven by the load
generator process at concurrency 16 (the default `queue.max_concurrent_turns`):
  phase 1     S new keys, one message each                        -> S sessions
  phases 2-4  S new keys each, three messages per key (in order)  -> 4S sessions, 10S messages
With S = 10,000 that is 40,000 sessions and 100,000 messages (`--quick`: S = 100).
RSS (VmRSS from /proc/<pid>/status) is read after each phase once the replies are in.
Idle lanes and key locks are forgotten, so RSS after phase 4 must stay close to RSS
after phase 1 although four times as many sessions have been seen.
"""

from __future__ import annotations

import asyncio
import time

from bench.common import Options, scratch, server_config, sessions_list, start_server
from bench.loadgen import run_plan
from bench.pipeline import http_key
from bench.report import Report
from bench.verify import Conversation, check_replies, check_store
from bots.testing import ChatlaneProcess

CONCURRENCY = 16
RSS_TARGET_MB = 150.0
GROWTH_LIMIT_MB = 10.0
"""Allowed RSS growth from phase 1 to the end (3x more sessions seen): allocator noise, not per-key state."""
LATER_PHASES = 3
MESSAGES_PER_KEY = 3


async def run(opts: Options) -> Report:
    report = Report("memory")
    s = 100 if opts.quick else 10_000
    rss: list[tuple[str, float]] = []
    expected: dict[str, Conversation] = {}
    rates: list[float] = []
    with scratch(opts, "memory") as root:
        config = server_config(root, queue_cap=20, max_concurrent_turns=CONCURRENCY)
        server = await start_server(config)
        try:
            base = server.base_url
            await settle(1.0)
            rss.append(("idle, just started", _rss_mb(server)))
            first = [(http_key(f"m0-{i}"), f"m0-{i} #1") for i in range(s)]
            t0 = time.perf_counter()
            got = await run_plan(_plan(base, first))
            rates.append(len(first) / got["wall_s"])
            expected |= check_replies(report, "phase 1", first, got["results"], ordered=True)
            await settle()
            rss.append((f"after {s:,} sessions ({s:,} messages)", _rss_mb(server)))
            sent = len(first)
            for p in range(1, LATER_PHASES + 1):
                plan = [
                    (http_key(f"m{p}-{i}"), f"m{p}-{i} #{j + 1}")
                    for j in range(MESSAGES_PER_KEY)
                    for i in range(s)
                ]
                got = await run_plan(_plan(base, plan))
                rates.append(len(plan) / got["wall_s"])
                expected |= check_replies(report, f"phase {p + 1}", plan, got["results"], ordered=True)
                sent += len(plan)
                await settle()
                rss.append((f"after {s * (p + 1):,} sessions ({sent:,} messages)", _rss_mb(server)))
            elapsed = time.perf_counter() - t0
            await settle(3.0)
            rss.append(("idle after the load", _rss_mb(server)))
            peak = server.status()["VmHWM"] / 1024
        finally:
            code = await server.stop()
        report.check("server stopped cleanly on SIGTERM", code == 0, f"exit code {code}")
        listed = await asyncio.to_thread(sessions_list, config)
        await check_store(report, "all phases", expected, listed, root / "state", transcript_sample=300)
    for what, mb in rss:
        report.metric(f"RSS {what}", "MB", [mb], RSS_TARGET_MB)
    report.metric("server peak RSS (VmHWM)", "MB", [peak], RSS_TARGET_MB)
    report.metric("requests/s per phase", "/s", rates, better="higher")
    after_first, last = rss[1][1], rss[-2][1]
    growth = last - after_first
    report.metric(
        f"RSS growth, {s:,} -> {s * (LATER_PHASES + 1):,} sessions", "MB", [growth], GROWTH_LIMIT_MB
    )
    report.metric("RSS growth per extra session", "B", [growth * 1024 * 1024 / (s * LATER_PHASES)])
    report.check(
        f"memory does not grow with sessions seen: {s:,} -> {s * (LATER_PHASES + 1):,} sessions "
        f"adds at most {GROWTH_LIMIT_MB:g} MB",
        growth <= GROWTH_LIMIT_MB,
        f"{after_first:.1f} MB -> {last:.1f} MB ({growth:+.1f} MB)",
    )
    report.note(
        f"{sent:,} messages over {len(expected):,} sessions in {elapsed:.0f} s at concurrency {CONCURRENCY}; "
        "one run (the figures are single readings, not a distribution)"
    )
    return report


async def settle(seconds: float = 0.5) -> None:
    """Let the server finish its post-reply work (lane teardown) before reading memory."""
    await asyncio.sleep(seconds)


def _rss_mb(server: ChatlaneProcess) -> float:
    return server.status()["VmRSS"] / 1024


def _plan(base: str, requests: list[tuple[str, str]]) -> dict[str, object]:
    return {
        "base_url": base,
        "concurrency": CONCURRENCY,
        "ordered_per_key": True,
        "requests": requests,
        "timeout_s": 120,
    }
