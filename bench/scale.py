"""Store scaling: does an operation cost the same with 100 and with 100,000 sessions stored?

For each size, a file store is pre-filled with that many entries, written directly in
the store's own layout (`FileStore.layout.entry_path`, `entry_to_json`) without fsync, then
flushed once with `os.sync()` so the measurement does not pay for the pre-fill's
writeback. Then, in rounds that visit every size in turn (so background noise hits
every size alike), it measures resolve of a new key (durable mint), a turn's store work
on a stored key (turn lock + fenced commit) and resolve of a stored key (hot read), and prints the
ratio of the largest to the smallest size (goal <= 1.5).

The page cache is left warm (dropping it needs root and would disturb other work on a
shared machine), so these are warm-cache figures.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Options, bench_key, scratch, timed_us
from bench.report import Report
from core.conversation.reserver import Reserver
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import SessionEntry, TurnCommit
from core.store.entries import entry_to_json
from core.store.files.store import FileStore

RATIO_TARGET = 1.5
PREFILL_TARGET_S = 60.0
SAMPLE_KEYS = 1000


@dataclass(slots=True)
class Sized:
    size: int
    store: FileStore
    reserver: Reserver
    stored: list[tuple[SessionKey, str]]
    """A sample of pre-filled (key, session id) pairs to commit turns to and resolve."""
    mint_us: list[float] = field(default_factory=list)
    commit_us: list[float] = field(default_factory=list)
    hot_us: list[float] = field(default_factory=list)


async def run(opts: Options) -> Report:
    report = Report("scale")
    sizes = (100, 500, 2000) if opts.quick else (100, 10_000, 100_000)
    per_round = 40 if opts.quick else 300
    rounds = opts.runs
    with scratch(opts, "scale") as root:
        stores: list[Sized] = []
        try:
            for size in sizes:
                path = root / f"n{size}"
                t0 = time.perf_counter()
                stored = prefill(path, size)
                written = time.perf_counter() - t0
                os.sync()
                total = time.perf_counter() - t0
                report.metric(f"pre-fill {size:,} sessions", "s", [total], PREFILL_TARGET_S)
                report.note(
                    f"pre-fill {size:,}: one process, direct writes in the store's layout, no fsync "
                    f"({written:.1f} s), then one os.sync() ({total - written:.1f} s)"
                )
                store = FileStore(path)
                stores.append(Sized(size, store, Reserver(store), stored))
            for s in stores:
                await _verify_prefill(report, s)
            for r in range(rounds):
                for s in stores:
                    await _measure(s, per_round, r)
            for s in stores:
                report.metric(f"mint @ {s.size:,}", "ms", [x / 1000 for x in s.mint_us])
                report.metric(f"commit @ {s.size:,}", "ms", [x / 1000 for x in s.commit_us])
                report.metric(f"hot resolve @ {s.size:,}", "us", s.hot_us)
            await _checks(report, stores, rounds * per_round)
            small, large = stores[0], stores[-1]
            for what in ("mint", "commit", "hot resolve"):
                a = next(m for m in report.metrics if m.name == f"{what} @ {small.size:,}")
                b = next(m for m in report.metrics if m.name == f"{what} @ {large.size:,}")
                report.metric(
                    f"{what} p50 ratio {large.size:,}/{small.size:,}",
                    "x",
                    [b.median / a.median],
                    RATIO_TARGET,
                )
        finally:
            for s in stores:
                await s.store.close()
    report.note(f"{rounds} rounds x {per_round} operations of each kind per size, sizes visited in turn")
    report.note("warm page cache: figures for a store whose entries the OS has cached")
    return report


def prefill(root: Path, n: int) -> list[tuple[SessionKey, str]]:
    """`n` entries written straight into the store's layout; a sample of (key, id) back."""
    layout = FileStore(root, workers=1).layout  # only for its paths; never started a thread
    made: set[Path] = set()
    now = time.time()
    sample: list[tuple[SessionKey, str]] = []
    step = max(1, n // SAMPLE_KEYS)
    for i in range(n):
        key = bench_key(f"u{i}", "stored")
        sid = uuid.uuid4().hex
        entry = SessionEntry(key, sid, "bench", now, now, now, now, turns=1)
        path = layout.entry_path(key)
        if path.parent not in made:
            os.makedirs(path.parent, mode=0o700, exist_ok=True)
            made.add(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(entry_to_json(entry), separators=(",", ":")).encode())
        finally:
            os.close(fd)
        if i % step == 0:
            sample.append((key, sid))
    return sample


async def _verify_prefill(report: Report, s: Sized) -> None:
    """The pre-filled files are what the store itself reads: sample keys resolve to their ids."""
    found = sum(len(files) for _, _, files in os.walk(s.store.root / "sessions"))
    wrong = 0
    for key, sid in s.stored:
        entry = await s.store.get(key)
        wrong += entry is None or entry.session_id != sid
    report.check(
        f"pre-fill {s.size:,}: {s.size:,} entry files, sampled entries read back by the store",
        found == s.size and wrong == 0,
        f"files={found}, sample={len(s.stored)}, unreadable or wrong={wrong}",
    )


async def _measure(s: Sized, n: int, round_no: int) -> None:
    rng = random.Random(round_no * 1_000_003 + s.size)
    for i in range(n):
        s.mint_us.append(await timed_us(s.reserver.resolve(bench_key(f"r{round_no}n{i}", "new"))))
    for _ in range(n):
        key, sid = rng.choice(s.stored)
        s.commit_us.append(await timed_us(_commit_turn(s.store, key, sid)))
    for _ in range(n):
        key, _ = rng.choice(s.stored)
        s.hot_us.append(await timed_us(s.reserver.resolve(key)))


async def _commit_turn(store: FileStore, key: SessionKey, sid: str) -> None:
    """One turn's store work after the agent: the turn lock and one fenced commit."""
    async with store.lock_turn(key) as lease:
        entry = await store.get(key)
        turns = entry.turns + 1 if entry is not None else 1
        record = ChatMessage("user", "t", time.time())
        await store.commit(TurnCommit(lease, sid, uuid.uuid4().hex, [record], time.time(), turns))


async def _checks(report: Report, stores: list[Sized], expected_mints: int) -> None:
    for s in stores:
        report.check(
            f"@ {s.size:,}: every new key minted once, stored keys were never re-minted",
            s.reserver.mints == expected_mints and s.reserver.adoptions == 0,
            f"mints={s.reserver.mints} (expected {expected_mints}), adoptions={s.reserver.adoptions}",
        )
        lost = 0
        for key, sid in s.stored:
            entry = await s.store.get(key)
            lost += entry is None or entry.session_id != sid or entry.turns < 1
        report.check(
            f"@ {s.size:,}: sampled stored sessions kept their ids after commits", lost == 0, f"lost={lost}"
        )
