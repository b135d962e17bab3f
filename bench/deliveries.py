"""Delivery dedupe and limits: what the shared checks add per message, and proof they hold.

Per backend (files; Redis when `--redis-url` is given or `redis-server` is installed):
  new delivery       `mark_delivered` of a Slack-shaped delivery (event id + message id)
  duplicate          the same call for a copy already seen
  limit count        `count_message` of a sender under its limit
  submit +dedupe     `Gateway.submit` with a delivery, minus a plain `submit`: the latency
                     the shared check adds on a message's way to its lane
  copies race        2 stores (as 2 processes) x 3 copies of each message at once: one first
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.common import Options, Stores, StoreSpec, redis_url, scratch, timed_us
from bench.report import Report
from core.agents.base import TurnInput
from core.config import Config
from core.door.gateway import Gateway
from core.model.messages import Inbound, Reply
from core.turn.responders import QuietResponder

HOUR = 3600.0


class _Ignore(QuietResponder):
    async def send(self, reply: Reply) -> None:
        return None


class _StuckAgent:
    """Never answers: submit is measured up to the lane, with few turns running beside it."""

    name = "stuck"

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield ""

    async def close(self) -> None:
        return None


async def run(opts: Options) -> Report:
    report = Report("deliveries")
    n = 100 if opts.quick else 5000
    with scratch(opts, "deliveries") as root, redis_url(opts) as url:
        backends = [Stores("files", root)]
        if url is not None:
            backends.append(Stores("redis", root, url))
        else:
            report.note("redis: skipped (no --redis-url and no redis-server on PATH)")
        for stores in backends:
            try:
                await _backend(report, stores, n, opts.runs, root)
            finally:
                stores.cleanup()
    report.note(f"sizes: {n} calls per latency figure; {opts.runs} runs of the race")
    return report


async def _backend(report: Report, stores: Stores, n: int, runs: int, root: Path) -> None:
    b = stores.backend
    spec = stores.fresh()
    store = spec.open()
    try:
        for i in range(50):  # warm: pool threads, folders, script cache
            await store.mark_delivered([f"warm:{i}"], HOUR)
        new = [
            await timed_us(store.mark_delivered([f"event:E{i}", f"message:C1:{i}.0"], HOUR)) for i in range(n)
        ]
        dup = [
            await timed_us(store.mark_delivered([f"event:E{i}", f"message:C1:{i}.0"], HOUR)) for i in range(n)
        ]
        count = [await timed_us(store.count_message(f"bench:user{i % 50}", 10**9, 0)) for i in range(n)]
    finally:
        await store.close()
    report.metric(f"{b}: new delivery check", "us", new)
    report.metric(f"{b}: duplicate check", "us", dup)
    report.metric(f"{b}: limit count", "us", count)
    report.metric(f"{b}: submit +dedupe (added)", "us", await _added_by_submit(stores.fresh(), n))
    for r in range(runs):
        await _race(report, stores.fresh(), 200, f"{b} run {r + 1}")


async def _added_by_submit(spec: StoreSpec, n: int) -> list[float]:
    """Per message: submit with a delivery minus the median plain submit (other keys each)."""
    store = spec.open()
    gateway = Gateway(Config(), store, _StuckAgent())
    try:
        plain = []
        for i in range(n):
            inbound = Inbound("slack", f"p{i}", "C1", "hi", f"{i}.0")
            plain.append(await timed_us(gateway.submit(inbound, _Ignore())))
        base = statistics.median(plain)
        added = []
        for i in range(n):
            inbound = Inbound("slack", f"d{i}", "C1", "hi", f"{i}.0")
            delivery = [("retry", f"event:E{i}"), ("twin", f"message:C1:{i}.0")]
            added.append(await timed_us(gateway.submit(inbound, _Ignore(), delivery=delivery)) - base)
        return added
    finally:
        quiet = logging.getLogger("chatlane")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the parked turns' shutdown notices are expected here
        try:
            await gateway.close(timeout=0)
        finally:
            quiet.setLevel(level)
        await store.close()


async def _race(report: Report, spec: StoreSpec, messages: int, label: str) -> None:
    a, b = spec.open(), spec.open()
    try:
        firsts = 0
        t0 = time.perf_counter()
        for m in range(messages):
            copies = [
                (a, b)[i % 2].mark_delivered([f"event:{m}-{i % 3}", f"message:{m}"], HOUR) for i in range(6)
            ]
            results = await asyncio.gather(*copies)
            firsts += results.count(0)
        ms = (time.perf_counter() - t0) * 1000
        report.check(
            f"{label}: {messages} messages x 6 racing copies on 2 stores: one first each",
            firsts == messages,
            f"firsts={firsts} in {ms:.0f} ms",
        )
    finally:
        await a.close()
        await b.close()
