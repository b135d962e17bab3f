"""A real `redis-server` on a free loopback port, for tests and benchmarks.

    with RedisServer.start() as server:      # tests: the fixtures in tests/support/redis.py
        url = server.url                     # redis://127.0.0.1:<port>/0
        server.stop(); server.restart()      # same port, empty again (no persistence)

The server runs with `--save "" --appendonly no` in a temporary folder and is stopped
(SIGTERM, then SIGKILL) when the block ends. `find_redis_server()` says whether one is
installed; `RedisServer.start()` without it raises `FileNotFoundError`.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

import redis

START_TIMEOUT_S = 10.0
NOT_INSTALLED = "redis-server is not on PATH (apt-get install redis-server; .ci/run installs it)"


def find_redis_server() -> str | None:
    """The path of `redis-server` on PATH, or None."""
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique_prefix() -> str:
    """A `store.prefix` no other user of the server has, so tests can share one server."""
    return f"t{uuid.uuid4().hex[:12]}"


class RedisServer:
    """One `redis-server` process bound to 127.0.0.1."""

    def __init__(self, binary: str, port: int, workdir: Path, *, durable: bool = False) -> None:
        self.binary, self.port, self.workdir = binary, port, workdir
        self.durable = durable
        """`--appendonly yes --appendfsync always` (every write fsync'd), as for a benchmark
        against a durable deployment; tests run without persistence."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, binary: str | None = None, *, durable: bool = False) -> RedisServer:
        """Start on a free port (retrying if another process grabbed it first)."""
        binary = binary or find_redis_server()
        if binary is None:
            raise FileNotFoundError(NOT_INSTALLED)
        workdir = Path(tempfile.mkdtemp(prefix="chatlane-redis-"))
        last: Exception | None = None
        for _ in range(5):
            server = cls(binary, free_port(), workdir, durable=durable)
            try:
                server.restart()
            except RuntimeError as exc:
                last = exc
                continue
            return server
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"could not start redis-server: {last}")

    def restart(self) -> None:
        """(Re)start on the same port and wait until it answers PING.

        A blocking wait (not `eventually`): the fixtures and benchmarks that start a
        server are synchronous.
        """
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - owned by the process
        with log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable else
                      ["--appendonly", "no"]),
                    "--dir", str(self.workdir),
                    "--daemonize", "no",
                    *self._debug_option(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as probe:
                    if probe.ping():
                        return
            except redis.RedisError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {START_TIMEOUT_S} s")

    def _debug_option(self) -> list[str]:
        """Allow DEBUG from loopback (tests use `DEBUG SLEEP` to stall the server); 7.0+ only."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"v=(\d+)\.", out)
        return ["--enable-debug-command", "local"] if m and int(m.group(1)) >= 7 else []

    def stop(self) -> None:
        """Stop the server (its data is gone: it never persists)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.workdir / f"redis-{self.port}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self) -> redis.Redis:
        """A plain synchronous client, for looking at what a test stored."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
