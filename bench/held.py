"""Chatlane's own memory per turn waiting on its model: tracemalloc, in one process, no HTTP.

`python bench/held.py N [STOP_POLL_S]`: a gateway on a files store in a scratch folder,
N new conversations whose agent holds every turn (`RecordingAgent.release`), measured
once all N are waiting for the model and a poll interval has passed (so the stop
polling's own allocations are in): (traced bytes then - traced bytes idle after a
warm-up) / N; then the share of a core the process uses while they all wait (nothing
runs but the stop polling). Prints one JSON line: {"n", "bytes_per_turn", "cpu_share_waiting"}.

Run as a file, not `-m`, so `PYTHONPATH` picks the `core` it measures
(`BENCH_SERVER_PYTHONPATH` in bench/waiting.py: a before/after on one bench).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bots.testing import RecordingAgent, Replies, eventually
from core.config import Config, QueueSettings
from core.door.gateway import Gateway
from core.model.messages import Inbound
from core.store.files.store import FileStore

WARMUP = 20
CPU_WINDOW_S = 3.0
"""How long the process's CPU is measured while all N turns wait (only the stop polling runs)."""


async def _answer_all(gw: Gateway, prefix: str, n: int) -> list[Replies]:
    replies = [Replies() for _ in range(n)]
    for i, r in enumerate(replies):
        await gw.submit(Inbound("bench", f"{prefix}{i}", "held", "hello", message_id=f"{prefix}{i}"), r)
    return replies


async def measure(n: int, poll_s: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="chatlane-held-") as root:
        agent = RecordingAgent()
        config = Config(queue=QueueSettings(max_concurrent_turns=n, stop_poll_s=poll_s))
        gw = Gateway(config, FileStore(Path(root) / "state"), agent)
        try:
            warm = await _answer_all(gw, "warm", WARMUP)
            for r in warm:
                await r.done.wait()
            agent.release = asyncio.Event()
            gc.collect()
            tracemalloc.start()
            idle = tracemalloc.get_traced_memory()[0]
            held = await _answer_all(gw, "held", n)
            await eventually(lambda: agent.running >= n, timeout=120)
            await asyncio.sleep(poll_s * 1.5)  # every turn polled at least once
            gc.collect()
            waiting = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(CPU_WINDOW_S)
            cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            agent.release.set()
            for r in held:
                await r.done.wait()
        finally:
            await gw.close(timeout=10)
            await gw.store.close()
    return (waiting - idle) / n, cpu


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    poll_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
    per, cpu = asyncio.run(measure(n, poll_s))
    print(json.dumps({"n": n, "bytes_per_turn": round(per), "cpu_share_waiting": round(cpu, 4)}))


if __name__ == "__main__":
    main()
