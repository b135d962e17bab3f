"""Big messages and many conversations: costs must follow what a turn reads, not history.

One `chatlane run` subprocess (HTTP API, echo agent, file store):
  big       20 messages of about 1 MB on one key (the echo agent answers each with
            the same megabyte, so its transcript holds about 40 MB), then 2-byte turns
            on that key and, interleaved, on another key: a turn's cost must not grow
            with the bytes of history behind it (target: p50 <= 50 ms), and other keys
            must not slow down.
  queue     100 conversations at once, one message each, then 100 conversations with
            several messages each: p99 latency may grow with the number of turns
            queued ahead, but no faster.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp

from bench.common import Options, scratch, server_config, start_server
from bench.pipeline import http_key
from bench.report import Report

BIG_TURN_TARGET_MS = 50.0


async def run(opts: Options) -> Report:
    report = Report("big")
    big_count, small_turns = (3, 5) if opts.quick else (20, 20)
    size = 100_000 if opts.quick else 1_000_000
    with scratch(opts, "big") as root:
        config = server_config(root, queue_cap=200, max_concurrent_turns=16)
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text.replace("[http]\n", f"[http]\nmax_body_bytes = {4 * size}\n", 1), encoding="utf-8"
        )
        server = await start_server(config)
        try:
            timeout = aiohttp.ClientTimeout(total=300)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                url = server.base_url + "/chat/completions"
                big_key, other_key = http_key("big"), http_key("small")
                for i in range(big_count):
                    await _ask(http, url, big_key, f"{i} " + "x" * size)
                on_big: list[float] = []
                on_other: list[float] = []
                for _ in range(small_turns):
                    on_big.append(await _ask(http, url, big_key, "hi"))
                    on_other.append(await _ask(http, url, other_key, "hi"))
                one_each = await _burst(http, url, [[f"q{i}"] for i in range(100)])
                five_each = await _burst(http, url, [[f"r{i}"] * 5 for i in range(100)])
            rss = server.status()["VmHWM"] / 1024
        finally:
            await server.stop()
    report.metric(
        f"2-byte turn after {big_count} x {size // 1000} kB on its key", "ms", on_big, BIG_TURN_TARGET_MS
    )
    report.metric("2-byte turn on another key meanwhile", "ms", on_other)
    report.metric("100 conversations x 1 message: latency", "ms", one_each, on="p99")
    report.metric("100 conversations x 5 messages: latency", "ms", five_each, on="p99")
    p99_1, p99_5 = _p99(one_each), _p99(five_each)
    report.metric("p99 growth for 5x the queue (should be <= 5)", "x", [p99_5 / p99_1])
    report.metric("server peak RSS (VmHWM)", "MB", [rss])
    report.check(
        "a turn on the big key costs what it reads, not its history (p50 under 10x another key's)",
        statistics.median(on_big) < 10 * statistics.median(on_other) + 5,
        f"big key p50 {statistics.median(on_big):.1f} ms, other key p50 {statistics.median(on_other):.1f} ms",
    )
    report.note(f"transcript of the big key: about {2 * big_count * size / 1e6:.0f} MB")
    return report


async def _ask(http: aiohttp.ClientSession, url: str, key: str, text: str) -> float:
    """One turn; its latency in ms (raises unless it was answered)."""
    body = {"model": "main", "messages": [{"role": "user", "content": text}]}
    t0 = time.perf_counter()
    async with http.post(url, json=body, headers={"X-Session-Key": key}) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"turn on {key} answered {resp.status}")
    return (time.perf_counter() - t0) * 1000


async def _burst(http: aiohttp.ClientSession, url: str, conversations: list[list[str]]) -> list[float]:
    """Every conversation at once, each message sent without waiting (they queue per key)."""
    tasks = [
        asyncio.create_task(_ask(http, url, http_key(f"{texts[0]}-burst"), f"{texts[0]}-{j}"))
        for texts in conversations
        for j, _ in enumerate(texts)
    ]
    return list(await asyncio.gather(*tasks))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
