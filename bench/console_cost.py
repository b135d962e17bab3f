"""`python -m bench.console_cost [SESSIONS]`: the operator console's server cost.

A real `chatlane run` (files store filled directly with SESSIONS sessions, default
10,000; echo agent without delay) and a logged-in client: latency of the conversation
list (first page, pages deep in the listing, a filter that matches nothing and reads its
5,000-entry budget), then the chatlane process's CPU time for 300 streamed API turns of
one conversation without and with one open live view (SSE) of it. Prints one line per
figure. The machine it runs on may be shared: CPU times are the process's own
(utime+stime), latencies are wall time and suffer from neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bots.testing import ChatlaneProcess
from core.conversation import Reserver
from core.model import SessionKey
from core.store.files.store import FileStore

TOKEN = "bench-console-token"
NEXT = re.compile(r'rel="next" href="/console\?after=([^"]+)"')
TURNS = 300


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        async with http.get(url) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append((time.perf_counter() - started) * 1000)
    return out


async def turns(http: aiohttp.ClientSession, root: str, n: int) -> None:
    for i in range(n):
        body = {
            "model": "main",
            "user": "watched",
            "stream": True,
            "messages": [{"role": "user", "content": f"m{i}"}],
        }
        async with http.post(
            f"{root}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r:
            await r.read()


async def main(sessions: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="console-bench-"))
    store = FileStore(folder / "state")
    started = time.perf_counter()
    reserver = Reserver(store)
    for i in range(sessions):
        await store.reserve(SessionKey(f"agent:main:http:user-{i:06d}:api"), lambda _: True, reserver.mint)
    await store.close()
    print(f"filled {sessions} sessions in {time.perf_counter() - started:.1f} s")
    config = folder / "chatlane.toml"
    config.write_text(
        f'[store]\npath = "{folder / "state"}"\n[http]\nport = 0\nconsole = true\n', encoding="utf-8"
    )
    env = {"CHATLANE_HTTP_TOKEN": TOKEN}
    async with await ChatlaneProcess.start(config, folder / "run.log", env=env) as child:
        root = child.url
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(f"{root}/console/login", data={"token": TOKEN, "operator": "bench"}) as r:
                assert r.status == 200
            first = await timed(http, f"{root}/console", 200)
            cursors, url = [], f"{root}/console"
            for _ in range(min(sessions // 100, 60)):
                async with http.get(url) as r:
                    m = NEXT.search(await r.text())
                if m is None:
                    break
                cursors.append(m.group(1))
                url = f"{root}/console?after={m.group(1)}"
            deep: list[float] = []
            for c in random.Random(1).choices(cursors, k=100):
                deep += await timed(http, f"{root}/console?after={c}", 1)
            filtered = await timed(http, f"{root}/console?platform=discord", 20)
            for name, values in (("first page", first), ("deep pages", deep), ("filter, no match", filtered)):
                print(
                    f"conversation list, {sessions} sessions, {name}: p50 {pct(values, 0.5):.1f} ms, "
                    f"p95 {pct(values, 0.95):.1f} ms ({len(values)} requests)"
                )
            await turns(http, root, 20)  # warm up
            before = cpu_s(child.pid)
            started = time.perf_counter()
            await turns(http, root, TURNS)
            alone_cpu, alone_wall = cpu_s(child.pid) - before, time.perf_counter() - started
            events = 0

            async def watch() -> None:
                nonlocal events
                async with http.get(f"{root}/console/c/agent%3Amain%3Ahttp%3Awatched%3Aapi/live") as r:
                    async for line in r.content:
                        events += line.startswith(b"event:")

            watcher = asyncio.ensure_future(watch())
            await asyncio.sleep(0.5)
            before = cpu_s(child.pid)
            started = time.perf_counter()
            await turns(http, root, TURNS)
            watched_cpu, watched_wall = cpu_s(child.pid) - before, time.perf_counter() - started
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            print(
                f"{TURNS} streamed turns: {alone_cpu:.2f} s CPU ({alone_wall:.1f} s wall) "
                "without a live view, "
                f"{watched_cpu:.2f} s CPU ({watched_wall:.1f} s wall) with one ({events} SSE events): "
                f"{(watched_cpu - alone_cpu) / TURNS * 1000:+.2f} ms CPU per turn"
            )
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
