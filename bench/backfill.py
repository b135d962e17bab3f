"""The extra latency of a first turn that reads its thread (backfill).

In one process: the gateway with the files store and the echo agent, and the Slack
adapter's real responder (`bots.slack.history.BackfillingResponder`, slack_sdk's
`AsyncWebClient`) talking to a small local Slack Web API on loopback that answers
`conversations.replies` with a 30-message thread, `users.info` and `chat.postMessage`.
Each sample is one new conversation, timed from `gateway.submit` to the answer's
`chat.postMessage` returning. Runs alternate between `history_backfill = 20` and `= 0`,
so the difference is what reading the thread costs a first turn: one
`conversations.replies` and one `users.info` round trip, and 20 more records stored
with the turn's commit. (bench/ never imports tests/, so this is not the test fake
itself; the tests prove the same path through slack-bolt against it.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bench.common import Options, scratch
from bench.report import Report
from bots.slack.history import BackfillingResponder
from bots.slack.inbound import Identity
from bots.slack.reply import Poster
from core.agents.echo import EchoAgent
from core.config import Config
from core.door.gateway import Gateway
from core.model.messages import Inbound, Reply
from core.store.files.store import FileStore

THREAD = 30
LIMIT = 20
ME = Identity("U0BOT", "B0BOT", "T0")


class _Timed(BackfillingResponder):
    """The real responder; `answered` is set once the answer was posted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered = asyncio.Event()
        self.text = ""

    async def send(self, reply: Reply) -> None:
        await super().send(reply)
        self.text = reply.text
        self.answered.set()


@asynccontextmanager
async def _slack_api(counts: dict[str, int]) -> AsyncIterator[str]:
    """A minimal Slack Web API on loopback; yields its base URL."""

    async def method(request: web.Request) -> web.Response:
        name = request.match_info["method"]
        counts[name] = counts.get(name, 0) + 1
        args = {**request.query, **(await request.post())}
        if name == "conversations.replies":
            base = float(str(args.get("ts") or "1000"))
            messages = [
                {"type": "message", "user": f"U{i % 3}", "text": f"message {i}", "ts": f"{base + i:.6f}"}
                for i in range(THREAD)
            ]
            return web.json_response({"ok": True, "messages": messages, "has_more": False})
        if name == "users.info":
            user = {"id": "U", "name": "person", "profile": {"display_name": "person"}}
            return web.json_response({"ok": True, "user": user})
        return web.json_response({"ok": True, "ts": "1.000001"})

    app = web.Application()
    app.router.add_route("*", "/api/{method}", method)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/"
    finally:
        await runner.cleanup()


async def _first_turns(root: Path, limit: int, n: int) -> tuple[list[float], dict[str, int], int]:
    """(latencies in ms, Web API calls by method, answers that name the backfill)."""
    counts: dict[str, int] = {}
    latencies: list[float] = []
    named = 0
    async with _slack_api(counts) as base_url:
        client = AsyncWebClient(token="xoxb-bench", base_url=base_url)
        gateway = Gateway(Config(), FileStore(root / f"state-{limit}"), EchoAgent())
        try:
            for i in range(n):
                thread_ts = f"{1000 + i * 100}.000000"
                ts = f"{1000 + i * 100 + THREAD}.000000"  # after the whole thread
                responder = _Timed(
                    Poster(client), "C0", ts, thread_ts, "", me=ME, limit=limit, in_thread=thread_ts,
                    is_direct=False,
                )  # fmt: skip
                inbound = Inbound("slack", "U9", "C0", "summary?", ts, thread_ts, mentioned_bot=True)
                t0 = time.perf_counter()
                await gateway.submit(inbound, responder)
                await asyncio.wait_for(responder.answered.wait(), 30)
                latencies.append((time.perf_counter() - t0) * 1000)
                # the last `limit` of the thread and its root (always kept)
                named += f"read {limit + 1} earlier messages" in responder.text
        finally:
            await gateway.close(timeout=5)
            await gateway.store.close()
    return latencies, counts, named


async def run(opts: Options) -> Report:
    report = Report("backfill")
    n = 10 if opts.quick else 100
    with_backfill: list[float] = []
    without: list[float] = []
    for r in range(opts.runs):
        with scratch(opts, "backfill") as root:
            got, counts, named = await _first_turns(root, LIMIT, n)
            with_backfill.extend(got)
            reads = counts.get("conversations.replies", 0)
            report.check(f"run {r + 1}: each first turn read its thread once", reads == n, f"{reads} reads")
            report.check(
                f"run {r + 1}: each answer saw the root and {LIMIT} earlier messages", named == n, f"{named}"
            )
            got, counts, _ = await _first_turns(root, 0, n)
            without.extend(got)
            reads = counts.get("conversations.replies", 0)
            report.check(f"run {r + 1}: history_backfill = 0 reads nothing", reads == 0, f"{reads} reads")
    report.metric(f"first turn, backfill {LIMIT} of {THREAD}", "ms", with_backfill)
    report.metric("first turn, backfill off", "ms", without)
    extra = [a - b for a, b in zip(sorted(with_backfill), sorted(without), strict=True)]
    report.metric("extra (quantile by quantile)", "ms", extra)
    report.note(
        f"{opts.runs} runs x {n} new conversations per setting; gateway + files store + echo agent + "
        "the Slack responder (slack_sdk) against a local Web API on loopback: no network latency, "
        "a real Slack adds its conversations.replies and users.info round trips"
    )
    return report
