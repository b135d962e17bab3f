"""Many conversations waiting on a slow model: N at once, each one turn of a model that takes D s.

Each run starts two servers in turn and drives both with the same load generator
(`bench.loadgen`, CLIENTS processes of their own, one connection per conversation, no
pool limit below N):
  sleeper   `bench.sleeper`: a bare aiohttp handler that parses the body and sleeps D s
  chatlane  `chatlane run`, HTTP API, files store, the echo agent with `echo_delay_ms`
            = D (it sleeps on the loop exactly like the sleeper: what differs is
            chatlane's own work), `queue.max_concurrent_turns` = N
N distinct keys, all sent at once (new conversations), then a second message on each
key, all at once (follow-ups: their sessions exist). Reported: p50/p99 of the time beyond the model's D
(client latency - D), chatlane's p99 / the sleeper's from the same run, the servers'
peak RSS (VmHWM), and chatlane's bytes per waiting conversation: (peak RSS - RSS when
idle after a warm-up) / N. Every reply is checked (200, turn 1, one session per key).

The echo agent rather than `openai` + a fake model server: the openai client's pool
(1,000 connections by default) and a second server's latency would be measured too,
and the sleeper would no longer be the same model. `BENCH_WAITING_PROFILE=FILE` records
a py-spy flame graph of chatlane during each run's load (FILE gets the run number).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import SERVER_ENV, Options, scratch, start_server
from bench.loadgen import raise_open_files, run_plan
from bench.report import Report, percentile
from bench.verify import check_replies
from bots.testing import read_status, write_config
from core.model.keys import build_key

P99_RATIO_TARGET = 1.5
RSS_TARGET_MB = 150.0
WARMUP = 20
CLIENTS = 4
"""Load generator processes: one Python client starting 3,000 requests at once lags by
seconds on a loaded 2-core machine (measured: 3.5-6 s), and that lag would be measured."""


@dataclass(frozen=True, slots=True)
class Sizes:
    conversations: int
    delay_s: float

    @classmethod
    def of(cls, opts: Options) -> Sizes:
        """`BENCH_WAITING_N` / `BENCH_WAITING_DELAY_S` override the size (e.g. growth at 1,000)."""
        n, delay = (100, 0.5) if opts.quick else (3000, 2.0)
        return cls(
            int(os.environ.get("BENCH_WAITING_N", n)), float(os.environ.get("BENCH_WAITING_DELAY_S", delay))
        )


def _key(user: str) -> str:
    return str(build_key("main", "http", user, "api"))


def _plan(base: str, requests: list[tuple[str, str]], timeout_s: float) -> dict[str, object]:
    return {
        "base_url": base,
        "concurrency": len(requests),
        "ordered_per_key": True,
        "requests": requests,
        "timeout_s": timeout_s,
        "processes": CLIENTS,
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _beyond(rows: list[Any], delay_s: float) -> list[float]:
    """Milliseconds each answered request took beyond the model's own time."""
    return [row[1] - delay_s * 1000 for row in rows if row and row[0] == 200]


async def run(opts: Options) -> Report:
    raise_open_files()  # the servers inherit it: one descriptor per waiting connection
    report = Report("waiting")
    sz = Sizes.of(opts)
    n, delay = sz.conversations, sz.delay_s
    timeout = delay + 60.0
    series: dict[str, list[float]] = {
        k: []
        for k in (
            "p50",
            "p99",
            "s50",
            "s99",
            "ratio",
            "peak",
            "idle",
            "per",
            "speak",
            "lag",
            "slag",
            "cpu",
            "scpu",
            "f50",
            "f99",
            "fratio",
            "fcpu",
        )
    }
    for r in range(opts.runs):
        label = f"run {r + 1}"
        with scratch(opts, "waiting") as root:
            requests = [(_key(f"wait{r}-{i}"), f"w{i}") for i in range(n)]
            sleeper, s_peak, s_cpu = await _sleeper(requests, delay, timeout)
            config = write_config(
                root,
                f'[agent]\nbackend = "echo"\necho_delay_ms = {int(delay * 1000)}\n'
                f"[queue]\nmax_concurrent_turns = {n}\n",
            )
            server = await start_server(config)
            try:
                warm = [(_key(f"warm{r}-{i}"), f"warm {i}") for i in range(WARMUP)]
                await run_plan(_plan(server.base_url, warm, timeout))
                idle = server.status()["VmRSS"]
                profile = await _profile(server.proc.pid, r)
                cpu0 = _cpu_s(server.proc.pid)
                got = await run_plan(_plan(server.base_url, requests, timeout))
                cpu = _cpu_s(server.proc.pid) - cpu0
                again = [(key, f"{text} again") for key, text in requests]
                cpu0 = _cpu_s(server.proc.pid)
                got_again = await run_plan(_plan(server.base_url, again, timeout))
                cpu_again = _cpu_s(server.proc.pid) - cpu0
                if profile is not None:  # py-spy writes its file on SIGINT
                    profile.send_signal(signal.SIGINT)
                    await profile.wait()
                peak = server.status()["VmHWM"]
            finally:
                code = await server.stop()
        report.check(f"{label}: server stopped cleanly on SIGTERM", code == 0, f"exit code {code}")
        check_replies(
            report, f"{label} chatlane", requests + again, got["results"] + got_again["results"], ordered=True
        )
        check_replies(report, f"{label} sleeper", requests, sleeper["results"], ordered=False)
        ours, bare = _beyond(got["results"], delay), _beyond(sleeper["results"], delay)
        series["p50"].append(percentile(ours, 50))
        series["p99"].append(percentile(ours, 99))
        series["s50"].append(percentile(bare, 50))
        series["s99"].append(percentile(bare, 99))
        series["ratio"].append(series["p99"][-1] / max(series["s99"][-1], 1.0))
        series["peak"].append(peak / 1024)
        series["idle"].append(idle / 1024)
        series["per"].append((peak - idle) * 1024 / n)
        series["speak"].append(s_peak / 1024)
        follow = _beyond(got_again["results"], delay)
        series["f50"].append(percentile(follow, 50))
        series["f99"].append(percentile(follow, 99))
        series["fratio"].append(series["f99"][-1] / max(series["s99"][-1], 1.0))
        series["fcpu"].append(cpu_again * 1000 / n)
        series["cpu"].append(cpu * 1000 / n)
        series["scpu"].append(s_cpu * 1000 / n)
        series["lag"].append(float(got["client_lag_ms"]))
        series["slag"].append(float(sleeper["client_lag_ms"]))
    ms = f"{delay:g} s"
    report.metric(f"chatlane: p50 beyond the model's {ms} ({n} at once)", "ms", series["p50"])
    report.metric(f"chatlane: p99 beyond the model's {ms}", "ms", series["p99"])
    report.metric(f"sleeper: p50 beyond {ms} (bare aiohttp, same client)", "ms", series["s50"])
    report.metric(f"sleeper: p99 beyond {ms}", "ms", series["s99"])
    report.metric("chatlane / sleeper p99 beyond the model", "x", series["ratio"], P99_RATIO_TARGET)
    report.metric("follow-ups (the same keys again): p50 beyond the model", "ms", series["f50"])
    report.metric("follow-ups: p99 beyond the model", "ms", series["f99"])
    report.metric("follow-ups / sleeper p99 beyond the model", "x", series["fratio"])
    report.metric("chatlane peak RSS (VmHWM)", "MB", series["peak"], RSS_TARGET_MB)
    report.metric("chatlane RSS idle after warm-up", "MB", series["idle"])
    report.metric("chatlane bytes per waiting conversation", "B", series["per"])
    report.metric("sleeper peak RSS (VmHWM)", "MB", series["speak"])
    held = [await _held(min(n, 1000)) for _ in range(opts.runs)]
    report.metric("chatlane's own bytes per waiting turn (tracemalloc, no HTTP)", "B", held)
    report.metric("chatlane CPU per conversation (user + system)", "ms", series["cpu"])
    report.metric("chatlane CPU per follow-up", "ms", series["fcpu"])
    report.metric("sleeper CPU per conversation (user + system)", "ms", series["scpu"])
    report.metric("client loop lag, worst (chatlane / sleeper run)", "ms", series["lag"] + series["slag"])
    report.note(
        f"{opts.runs} runs; each figure is one per run (p50/p99 over that run's {n} requests); "
        f"queue.max_concurrent_turns = {n}; echo agent with echo_delay_ms = {int(delay * 1000)}; "
        f"warm-up of {WARMUP} conversations before the idle RSS"
    )
    return report


async def _held(n: int) -> float:
    """bench/held.py on the server's `core` (so a before/after measures both): bytes per turn."""
    env = {k: v for k, v in {**os.environ, **SERVER_ENV}.items() if v is not None}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("held.py")), str(n),
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench/held.py failed ({proc.returncode})")
    return float(json.loads(out)["bytes_per_turn"])


async def _sleeper(
    requests: list[tuple[str, str]], delay: float, timeout: float
) -> tuple[dict[str, Any], int, float]:
    """The plan against the bare handler; its results, peak RSS (kB) and CPU seconds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sleeper", str(delay),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line.startswith("sleeper is up at "):
            raise RuntimeError(f"the sleeper did not start: {line!r}")
        base = line.removeprefix("sleeper is up at ").strip()
        warm = [(_key(f"swarm{i}"), f"warm {i}") for i in range(WARMUP)]
        await run_plan(_plan(base, warm, timeout))
        cpu0 = _cpu_s(proc.pid)
        got = await run_plan(_plan(base, requests, timeout))
        return got, read_status(proc.pid)["VmHWM"], _cpu_s(proc.pid) - cpu0
    finally:
        proc.terminate()
        await proc.wait()


async def _profile(pid: int, r: int) -> asyncio.subprocess.Process | None:
    """py-spy recording `pid` until SIGINT, if BENCH_WAITING_PROFILE asks for one."""
    target = os.environ.get("BENCH_WAITING_PROFILE")
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not target or spy is None:
        return None
    out = Path(target)
    out = out.with_name(f"{out.stem}-{r + 1}{out.suffix}")
    return await asyncio.create_subprocess_exec(
        spy, "record", "-p", str(pid), "-r", "100", "-o", str(out), "--nonblocking", "--idle",
        "-f", "speedscope" if out.suffix == ".json" else "flamegraph",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
