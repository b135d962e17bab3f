"""The load generator: a separate process, so its CPU is not the server's event loop.

    python -m bench.loadgen < plan.json > results.json

Plan: `{"base_url": ".../v1", "concurrency": 10, "ordered_per_key": true,
"requests": [[session_key, text], ...]}`. Each request is a chat completion with the
`X-Session-Key` header. With `ordered_per_key`, a key's next request is sent only after
its previous one was answered (different keys still overlap), so its turn numbers
must come back as 1, 2, 3...; without it, requests of one key race each other.

`timeout_s` bounds each request (default 60). The process raises its open-file soft limit
to the hard one and sizes its connection pool to `concurrency`, so thousands of requests
at once are not held back by the client; `client_lag_ms` (the worst delay of a 50 ms
timer on the client's own loop) shows whether the client kept up.

Results: `{"wall_s": ..., "client_lag_ms": ...,
"results": [[status, latency_ms, turn, session8, first], ...]}`
in plan order, where `turn`, `session8` (the first 8 hex digits of the session id) and
`first` (the first message the agent remembers, or null for a new session) are read
from the echo agent's reply; `status` is the HTTP status, or 0 for a transport error.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
import time
from typing import Any

import aiohttp

_ECHO = re.compile(
    r"\(turn (\d+) of session ([0-9a-f]{8}); (?:first thing I remember you saying: (.*)|new session)\)$"
)
Row = tuple[int, float, int, str, "str | None"]
LAG_TICK_S = 0.05


def parse_echo(text: str) -> tuple[int, str, str | None]:
    """(turn, session8, first remembered message or None) from an echo reply; (0, '', None) if not one."""
    m = _ECHO.search(text)
    if m is None:
        return 0, "", None
    first = m.group(3)
    return int(m.group(1)), m.group(2), (first[1:-1] if first else None)


async def drive(plan: dict[str, Any]) -> dict[str, Any]:
    url = plan["base_url"] + "/chat/completions"
    requests: list[tuple[str, str]] = [(k, t) for k, t in plan["requests"]]
    concurrency = int(plan["concurrency"])
    ordered = bool(plan.get("ordered_per_key", False))
    once = str(plan.get("idempotency", ""))
    timeout = aiohttp.ClientTimeout(total=float(plan.get("timeout_s", 60)))
    results: list[Row | None] = [None] * len(requests)
    done: list[asyncio.Event] = [asyncio.Event() for _ in requests]
    previous: dict[int, int] = {}
    last_of: dict[str, int] = {}
    for i, (key, _) in enumerate(requests):
        if ordered and key in last_of:
            previous[i] = last_of[key]
        last_of[key] = i
    todo = iter(range(len(requests)))
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(i: int) -> Row:
            key, text = requests[i]
            body = {"model": "main", "messages": [{"role": "user", "content": text}]}
            t0 = time.perf_counter()
            try:
                headers = {"X-Session-Key": key}
                if once:  # a retry-safe request: kept in the durable inbox until answered
                    headers["Idempotency-Key"] = f"{once}-{i}"
                async with http.post(url, json=body, headers=headers) as resp:
                    data = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
                return 0, (time.perf_counter() - t0) * 1000, 0, "", None
            ms = (time.perf_counter() - t0) * 1000
            try:
                turn, sid, first = parse_echo(data["choices"][0]["message"]["content"])
            except (KeyError, IndexError, TypeError):  # an error object, or not a completion
                return status, ms, 0, "", None
            return status, ms, turn, sid, first

        async def worker() -> None:
            for i in todo:
                if i in previous:
                    await done[previous[i]].wait()
                results[i] = await one(i)
                done[i].set()

        lag = [0.0]

        async def watch_lag() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(LAG_TICK_S)
                lag[0] = max(lag[0], time.perf_counter() - t - LAG_TICK_S)

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(watch_lag())
            async with asyncio.TaskGroup() as work:
                for _ in range(min(concurrency, len(requests))):
                    work.create_task(worker())
            watcher.cancel()
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "client_lag_ms": lag[0] * 1000, "results": results}


def raise_open_files() -> None:
    """The soft open-file limit up to the hard one: one descriptor per open connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    raise_open_files()
    plan = json.load(sys.stdin)
    json.dump(asyncio.run(drive(plan)), sys.stdout)
    return 0


async def run_plan(plan: dict[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """Run `plan` in a new `python -m bench.loadgen` process; its results.

    With `"processes": k` (k > 1) the keys are dealt over k load generators that run at
    once (a key's requests stay in one of them, so `ordered_per_key` still holds), each
    with its share of `concurrency`; results come back in plan order, `wall_s` and
    `client_lag_ms` are the worst of the k. For thousands of requests at once, where one
    client process would be what is measured."""
    k = int(plan.get("processes", 1))
    if k > 1:
        return await _run_split(plan, k, timeout)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(plan).encode()), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"load generator did not finish within {timeout} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


async def _run_split(plan: dict[str, Any], k: int, timeout: float) -> dict[str, Any]:
    share: dict[str, int] = {}
    slices: list[list[int]] = [[] for _ in range(k)]
    for i, (key, _) in enumerate(plan["requests"]):
        slices[share.setdefault(key, len(share) % k)].append(i)
    parts = [
        {
            **plan,
            "processes": 1,
            "concurrency": max(1, -(-int(plan["concurrency"]) // k)),
            "requests": [plan["requests"][i] for i in idx],
        }
        for idx in slices
        if idx
    ]
    got = await asyncio.gather(*(run_plan(p, timeout) for p in parts))
    results: list[Any] = [None] * len(plan["requests"])
    for idx, part in zip((s for s in slices if s), got, strict=True):
        for i, row in zip(idx, part["results"], strict=True):
            results[i] = row
    return {
        "wall_s": max(p["wall_s"] for p in got),
        "client_lag_ms": max(p["client_lag_ms"] for p in got),
        "results": results,
    }


if __name__ == "__main__":
    sys.exit(main())
