"""Load: many messages over many keys through the HTTP API, with a model that fails 5% of
calls and is slow on another 5%. Nothing is lost, every failure gets a plain answer,
and the server forgets idle keys and leaves no task behind.

Default size: 1,000 messages over 100 keys. `CHATLANE_FULL_LOAD=1`: 10,000 over 1,000.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections import Counter
from pathlib import Path

from bots.testing import FlakyAgent, eventually
from core.conversation.lanes import Lanes
from core.store.files.store import FileStore
from tests.faults.harness import inspect_state
from tests.support.http import Api, body, serve

FULL = os.environ.get("CHATLANE_FULL_LOAD") == "1"
MESSAGES, KEYS = (10_000, 1_000) if FULL else (1_000, 100)
IN_FLIGHT = 200
FAILURE_TEXT = "Sorry, I couldn't answer that just now. Please try again."


def _workers(lanes: Lanes) -> int:
    return len(lanes._workers)  # the lanes' own task set: what shutdown would have to stop


async def _send(
    api: Api, gate: asyncio.Semaphore, text: str, user: str, out: dict[str, tuple[int, str]]
) -> None:
    async with gate:
        status, payload, _ = await api.post(body(text, user=user))
    if status == 200:
        out[text] = (status, payload["choices"][0]["message"]["content"])
    else:
        out[text] = (status, payload["error"]["message"])


async def test_load_with_a_flaky_model_loses_nothing_and_forgets_idle_keys(tmp_path: Path) -> None:
    agent = FlakyAgent(fail=0.05, slow=0.05, slow_s=0.05)
    results: dict[str, tuple[int, str]] = {}
    gate = asyncio.Semaphore(IN_FLIGHT)
    per_key = MESSAGES // KEYS
    # Interleaved, so each key's messages arrive while its earlier ones still run.
    plan = [(f"k{k} m{i}", f"user{k}") for i in range(per_key) for k in range(KEYS)]
    started = time.perf_counter()
    async with serve(tmp_path, agent=agent, extra="[queue]\nmax_concurrent_turns = 64\n") as api:
        async with asyncio.timeout(600 if FULL else 120):
            await asyncio.gather(*(_send(api, gate, text, user, results) for text, user in plan))
        gateway, reserver = api.runtime.gateway, api.runtime.gateway.reserver
        # A reply is sent from inside its turn; the turn lock is released just after.
        await eventually(lambda: not len(gateway.lanes) and not reserver.active_locks, timeout=10)
        assert len(gateway.lanes) == 0 and _workers(gateway.lanes) == 0, "idle lanes are forgotten"
        assert reserver.active_locks == 0, "idle key locks are forgotten"
        store = api.runtime.store
        assert isinstance(store, FileStore)
    elapsed = time.perf_counter() - started
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == [], f"tasks left running after shutdown: {others}"
    assert agent.running == 0

    statuses = Counter(status for status, _ in results.values())
    assert len(results) == MESSAGES
    assert set(statuses) <= {200, 502}, statuses
    for text, (status, reply) in results.items():
        if agent.fails(text):
            assert status == 502 and reply == FAILURE_TEXT, (text, status, reply)
        else:
            assert status == 200 and reply.startswith(f"ok: {text} "), (text, status, reply)

    state = inspect_state(tmp_path / "state")
    assert state.damaged == [] and state.bad_lines == 0
    assert len(state.entries) == KEYS
    lost = []
    for k in range(KEYS):
        records = state.transcripts[state.entries[f"agent:main:http:user{k}:api"]]
        said = [m.content for m in records if m.role == "user"]
        lost += [f"k{k} m{i}" for i in range(per_key) if f"k{k} m{i}" not in said]
        assert len(said) == per_key, f"user{k}: a message stored twice or lost"
    assert lost == [], f"{len(lost)} user messages are not in their transcripts"
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # server and clients together
    print(
        f"\nload: {MESSAGES} messages over {KEYS} keys in {elapsed:.1f}s "
        f"({MESSAGES / elapsed:.0f}/s); HTTP {dict(statuses)}; agent calls {agent.calls}; "
        f"lost {len(lost)}; peak RSS of this process {peak_mib:.0f} MiB"
    )
