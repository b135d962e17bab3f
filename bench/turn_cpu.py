"""CPU per turn in the core alone: one process, no HTTP, the echo agent, a files store.

`python bench/turn_cpu.py [N] [FOLDER]`: a gateway on a files store in a scratch folder
(under FOLDER: `/dev/shm` for tmpfs), 50 conversations warmed up with one turn each,
then N messages over those 50 keys with 10 in flight and each key's next message sent
only after its previous answer (the pipeline bench's main plan, without its client and
server). Prints one JSON line: {"n", "turns_per_s", "main_thread_ms", "process_ms"}:
the event loop thread's CPU per turn (`time.thread_time`) and the whole process's
(`time.process_time`: the store's sync and pool threads too). Exits 1 if a turn was not
answered, or a key's turns did not come back as 2, 3, 4... in order.

Set beside `bench pipeline`'s server CPU, it splits a request's cost between the turn
and the HTTP layer (docs/performance.md, "Where a request's CPU goes"). Run as a file,
not `-m`, so `PYTHONPATH` picks the `core` it measures (a before/after on one bench).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from bots.testing import Replies
from core.agents.echo import EchoAgent
from core.config import Config, QueueSettings
from core.door.gateway import Gateway
from core.model.messages import Inbound
from core.store.files.store import FileStore

KEYS = 50
IN_FLIGHT = 10
_TURN = re.compile(r"\(turn (\d+) of session")


async def _ask(gw: Gateway, i: int, gate: asyncio.Semaphore, after: asyncio.Future[int] | None) -> int:
    """Message `i` (key i % KEYS), once the key's previous one was answered; its turn number."""
    if after is not None:
        await after
    async with gate:
        replies = Replies()
        await gw.submit(Inbound("bench", f"u{i % KEYS}", "c", f"m{i}", message_id=f"m{i}"), replies)
        await replies.done.wait()
    reply = replies.replies[-1]
    m = _TURN.search(reply.text)
    return int(m.group(1)) if reply.kind == "answer" and m else 0


async def measure(n: int, folder: str | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="chatlane-turn-cpu-", dir=folder) as root:
        config = Config(queue=QueueSettings(max_concurrent_turns=16, cap=n + KEYS))
        gw = Gateway(config, FileStore(Path(root) / "state"), EchoAgent())
        gate = asyncio.Semaphore(IN_FLIGHT)
        try:
            warm = [await _ask(gw, i, gate, None) for i in range(KEYS)]
            loop_cpu, all_cpu, wall = time.thread_time(), time.process_time(), time.perf_counter()
            last: dict[int, asyncio.Future[int]] = {}
            asked: list[asyncio.Future[int]] = []
            for i in range(n):
                ask = asyncio.ensure_future(_ask(gw, i, gate, last.get(i % KEYS)))
                last[i % KEYS] = ask
                asked.append(ask)
            turns = await asyncio.gather(*asked)
            loop_cpu = time.thread_time() - loop_cpu
            all_cpu = time.process_time() - all_cpu
            wall = time.perf_counter() - wall
        finally:
            await gw.close(timeout=10)
            await gw.store.close()
    expected = [2 + i // KEYS for i in range(n)]
    if warm != [1] * KEYS or turns != expected:
        wrong = sum(1 for got, want in zip(turns, expected, strict=True) if got != want)
        raise SystemExit(f"turn_cpu: {wrong} of {n} turns came back unanswered or out of order")
    return {
        "n": n,
        "turns_per_s": round(n / wall),
        "main_thread_ms": round(1000 * loop_cpu / n, 4),
        "process_ms": round(1000 * all_cpu / n, 4),
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    folder = sys.argv[2] if len(sys.argv) > 2 else None
    print(json.dumps(asyncio.run(measure(n, folder))))


if __name__ == "__main__":
    main()
