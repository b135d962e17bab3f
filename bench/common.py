"""Options and helpers shared by the benchmarks: stores to measure, timing, Redis."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bots.testing import ChatlaneProcess, RedisServer, find_redis_server, run_cli, write_config
from core.config import StoreSettings
from core.model.keys import SessionKey, build_key
from core.store.base import SessionStore


@dataclass(frozen=True, slots=True)
class Options:
    """Command-line options every benchmark gets."""

    quick: bool = False
    runs: int = 3
    redis_url: str | None = None
    workdir: Path | None = None
    """Where temporary state directories go (default: the system temp dir)."""


def bench_key(user: str, channel: str = "bench") -> SessionKey:
    return build_key("main", "bench", user, channel)


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """How to open one store; picklable, so worker processes open the same one."""

    backend: Literal["files", "redis"]
    path: str = ""
    url: str = ""
    prefix: str = ""

    def open(self) -> SessionStore:
        if self.backend == "redis":
            from core.store.redis.store import RedisStore

            settings = StoreSettings(backend="redis", url=self.url, prefix=self.prefix)
            return RedisStore.from_settings(settings, None)
        from core.store.files.store import FileStore

        return FileStore(self.path)


class Stores:
    """Hands out fresh, empty stores of one backend and removes them afterwards."""

    def __init__(self, backend: Literal["files", "redis"], root: Path, url: str = "") -> None:
        self.backend, self.root, self.url = backend, root, url
        self._prefixes: list[str] = []

    def fresh(self) -> StoreSpec:
        tag = uuid.uuid4().hex[:10]
        if self.backend == "redis":
            prefix = f"bench{tag}"
            self._prefixes.append(prefix)
            return StoreSpec("redis", url=self.url, prefix=prefix)
        return StoreSpec("files", path=str(self.root / f"state-{tag}"))

    def cleanup(self) -> None:
        """Delete what the benchmark stored (only its own prefixes on a Redis it was given)."""
        if self.backend != "redis" or not self._prefixes:
            return
        import redis

        with redis.Redis.from_url(self.url, socket_timeout=10) as r:
            for prefix in self._prefixes:
                names = list(r.scan_iter(match=f"{prefix}:*", count=1000))
                for i in range(0, len(names), 1000):
                    r.delete(*names[i : i + 1000])


@contextlib.contextmanager
def scratch(opts: Options, name: str) -> Iterator[Path]:
    """A temporary folder for one benchmark, removed afterwards."""
    if opts.workdir is not None:
        opts.workdir.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f"chatlane-bench-{name}-", dir=opts.workdir))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def redis_url(opts: Options) -> Iterator[str | None]:
    """`--redis-url` if given; else a local redis-server on a free port if one is installed."""
    if opts.redis_url:
        yield opts.redis_url
        return
    binary = find_redis_server()
    if binary is None:
        yield None
        return
    with RedisServer.start(binary) as server:
        yield server.url


SERVER_ENV: dict[str, str | None] = {
    "CHATLANE_HTTP_TOKEN": None,
    "PYTHONPATH": os.environ.get("BENCH_SERVER_PYTHONPATH") or os.environ.get("PYTHONPATH"),
}
"""The benchmarked server's environment: a token in the caller's shell must not turn on auth.
`BENCH_SERVER_PYTHONPATH` runs another checkout's server under this bench (a before/after
in one tree: `git archive main | tar -x -C /tmp/main`, then point it there)."""


def server_config(
    folder: Path, *, queue_cap: int, max_concurrent_turns: int = 16, redis_url: str | None = None
) -> Path:
    """The benchmarked `chatlane run`: HTTP on a free port, echo agent, file store in
    `folder`/state (or Redis at `redis_url`, under a prefix of its own)."""
    extra = (
        f'[agent]\nbackend = "echo"\n'
        f"[queue]\ncap = {queue_cap}\nmax_concurrent_turns = {max_concurrent_turns}\n"
    )
    if redis_url is not None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "chatlane.toml"
        store = f'[store]\nbackend = "redis"\nurl = "{redis_url}"\nprefix = "bench{uuid.uuid4().hex[:8]}"\n'
        path.write_text(f"{store}[http]\nport = 0\n{extra}", encoding="utf-8")
        return path
    return write_config(folder, extra)


async def start_server(config: Path) -> ChatlaneProcess:
    """`chatlane run` on `config`, up and serving; its log goes next to the config.

    It runs in the config's folder: `python -m` puts its working folder first on
    `sys.path`, ahead of `PYTHONPATH`, so a server started from the project's root would
    run the root's code whatever `BENCH_SERVER_PYTHONPATH` says."""
    return await ChatlaneProcess.start(
        config, config.parent / "server.log", env=SERVER_ENV, cwd=config.parent
    )


def sessions_list(config: Path) -> list[dict[str, Any]]:
    """What `chatlane sessions list --json` says is stored."""
    done = run_cli("sessions", "list", "--json", "--config", str(config), timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"chatlane sessions list failed ({done.returncode}): {done.stderr[-2000:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


async def timed_us(aw: Awaitable[object]) -> float:
    """How long awaiting `aw` took, in microseconds."""
    t0 = time.perf_counter_ns()
    await aw
    return (time.perf_counter_ns() - t0) / 1000
