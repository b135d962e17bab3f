"""A `chatlane run` server's CPU per HTTP request, read from /proc around a load.

`python -m bench.server_cpu MODE [N]` (MODE: `plain`, `keyed` or `new`): starts the
server as `bench pipeline` does (echo agent, files store in a scratch folder; `WORKDIR`
picks the folder's parent, e.g. `/dev/shm`), warms 50 conversations, then sends N
requests (default 3,000) at concurrency 10 (`BENCH_CONCURRENCY`) with the load
generator process:

- `plain`: over 50 known keys, each key's next request after its answer (the main plan);
- `keyed`: the same with an `Idempotency-Key` on each (the durable inbox's path);
- `new`: every request a conversation of its own (a session minted per request).

Prints one JSON line: requests/s, latency p50/p99 (ms), and the server's CPU per request
in ms: user and system time of the whole process (`/proc/PID/stat`) and of its event
loop thread alone (`/proc/PID/task/PID/stat`). Exits 1 if a request failed.
`BENCH_SERVER_PYTHONPATH` runs another checkout's server (a before/after on one bench).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import server_config, start_server
from bench.loadgen import run_plan
from bench.pipeline import _p99, _plan, http_key

KEYS = 50


def _ticks(path: str) -> tuple[int, int]:
    """(user, system) clock ticks from a /proc .../stat file."""
    fields = Path(path).read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _requests(mode: str, n: int) -> list[tuple[str, str]]:
    if mode == "new":
        return [(http_key(f"new{i}"), f"n{i}") for i in range(n)]
    return [(http_key(f"load{i % KEYS}"), f"k{i % KEYS}-m{i // KEYS + 1}") for i in range(n)]


async def measure(mode: str, n: int) -> dict[str, object]:
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryDirectory(prefix="chatlane-server-cpu-", dir=os.environ.get("WORKDIR")) as root:
        server = await start_server(server_config(Path(root), queue_cap=n + KEYS))
        try:
            warm = [(http_key(f"load{i}"), f"warm {i}") for i in range(KEYS)]
            await run_plan(_plan(server.base_url, warm, concurrency, ordered=True))
            whole, loop = f"/proc/{server.pid}/stat", f"/proc/{server.pid}/task/{server.pid}/stat"
            before, loop_before = _ticks(whole), _ticks(loop)
            got = await run_plan(
                _plan(
                    server.base_url,
                    _requests(mode, n),
                    concurrency,
                    ordered=True,
                    idempotency=f"r{time.time_ns()}" if mode == "keyed" else "",
                )
            )
            after, loop_after = _ticks(whole), _ticks(loop)
        finally:
            await server.stop()
    rows = [row for row in got["results"] if row]
    failed = n - sum(1 for row in rows if row[0] == 200)
    if failed:
        raise SystemExit(f"server_cpu: {failed} of {n} requests failed")
    latency = sorted(row[1] for row in rows)
    return {
        "mode": mode,
        "n": n,
        "requests_per_s": round(n / got["wall_s"]),
        "p50_ms": round(latency[len(latency) // 2], 2),
        "p99_ms": round(_p99(latency), 2),
        "user_ms": round((after[0] - before[0]) * tick_ms / n, 3),
        "sys_ms": round((after[1] - before[1]) * tick_ms / n, 3),
        "loop_thread_ms": round((sum(loop_after) - sum(loop_before)) * tick_ms / n, 3),
    }


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
    if mode not in ("plain", "keyed", "new"):
        raise SystemExit(f"server_cpu: unknown mode {mode!r}: plain, keyed or new")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    print(json.dumps(asyncio.run(measure(mode, n))))


if __name__ == "__main__":
    main()
