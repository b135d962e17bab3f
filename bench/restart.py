"""Restart to first resumed answer: how long people wait for their answers after a crash.

Each run starts `chatlane run` (HTTP API, echo agent, files store), sends one message
with an `Idempotency-Key` in each of `conversations` conversations while the agent is
slow (each message is in the durable inbox, its turn not answered), kills the server
(kill -9), starts a new one on the same state without the slowness, and measures from
the moment the new process is up (it logged "chatlane is up", its HTTP API listening)
to the first and to the last resumed answer, as the clients' retries with the same
`Idempotency-Key` get them. Checks: every message answered once, turn 1 of its session.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from bench.common import Options, scratch, start_server
from bench.report import Report
from bots.testing import eventually, write_config

FIRST_TARGET_MS = 1000.0


def _config(root: Path, delay_ms: int) -> Path:
    return write_config(root, f"idempotency_wait_s = 10\n[agent]\necho_delay_ms = {delay_ms}\n")


def _adds(state: Path) -> int:
    return sum(p.read_text().count('"add"') for p in (state / "inbox").glob("[0-9a-f][0-9a-f]/*.jsonl"))


async def _post(http: aiohttp.ClientSession, url: str, n: int) -> tuple[int, str]:
    body = {"model": "main", "user": f"u{n}", "messages": [{"role": "user", "content": f"m{n}"}]}
    try:
        async with http.post(url, json=body, headers={"Idempotency-Key": f"k{n}"}) as resp:
            data = await resp.json(content_type=None)
            return resp.status, str(data["choices"][0]["message"]["content"]) if resp.status == 200 else ""
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
        return 0, ""


async def _once(root: Path, conversations: int) -> tuple[int, list[tuple[float, str]]]:
    """One crash and restart: the new server's exit code and (ms after up, answer) per message."""
    state = root / "state"
    config = _config(root, 60_000)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        server = await start_server(config)
        url = server.url + "/v1/chat/completions"
        sent = [asyncio.ensure_future(_post(http, url, n)) for n in range(conversations)]
        await eventually(lambda: _adds(state) == conversations, timeout=30)
        await server.kill()
        await asyncio.gather(*sent)
        _config(root, 0)
        again = await start_server(config)
        try:
            up = time.perf_counter()
            url = again.url + "/v1/chat/completions"

            async def retry(n: int) -> tuple[float, str]:
                status, text = await _post(http, url, n)
                return (time.perf_counter() - up) * 1000, text if status == 200 else ""

            got = await asyncio.gather(*(retry(n) for n in range(conversations)))
        finally:
            code = await again.stop()
    return code, list(got)


async def run(opts: Options) -> Report:
    report = Report("restart")
    conversations = 3 if opts.quick else 10
    first_ms: list[float] = []
    last_ms: list[float] = []
    for r in range(opts.runs):
        with scratch(opts, "restart") as root:
            code, got = await _once(root, conversations)
        label = f"run {r + 1}"
        report.check(f"{label}: server stopped cleanly", code == 0, f"exit code {code}")
        ok = sum(1 for _, text in got if text.startswith("echo: m") and "(turn 1 " in text)
        report.check(f"{label}: each message answered once after the crash", ok == conversations, f"{ok}")
        first_ms.append(min(ms for ms, _ in got))
        last_ms.append(max(ms for ms, _ in got))
    report.metric(
        f"up -> first resumed answer ({conversations} conversations pending)", "ms", first_ms, FIRST_TARGET_MS
    )
    report.metric(f"up -> last resumed answer ({conversations} conversations)", "ms", last_ms)
    report.note(
        "kill -9 with one message per conversation in the inbox; the new process has no agent delay; "
        "files store; times as the clients' Idempotency-Key retries saw them"
    )
    return report
