"""Shared helpers for the fault suite: real chatlane processes, an in-process API with a
misbehaving agent, and checks that read the state directory the way a restart would."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bots.http.service import HttpService
from bots.runtime import Runtime
from core.config import load_config
from core.keys import validate_key
from core.store import jsonl
from core.types import Agent, AgentError, ChatMessage, TurnInput

ROOT = Path(__file__).resolve().parents[2]
COMPLETIONS = "/v1/chat/completions"
_UP = re.compile(rb"OpenAI-compatible API at http://127\.0\.0\.1:(\d+)/v1")


def write_config(tmp_path: Path, extra: str = "", *, state: Path | None = None) -> Path:
    """A minimal config: HTTP on a free port, echo agent, files store under `state`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "chatlane.toml"
    where = state if state is not None else tmp_path / "state"
    path.write_text(f'[store]\npath = "{where}"\n[http]\nport = 0\n{extra}\n', encoding="utf-8")
    return path


def body(text: str, user: str | None = None, **more: Any) -> dict[str, Any]:
    """A chat-completions request body with one user message."""
    out: dict[str, Any] = {"model": "main", "messages": [{"role": "user", "content": text}], **more}
    if user is not None:
        out["user"] = user
    return out


# ---------------------------------------------------------------- real processes
@dataclass(slots=True)
class Process:
    """A `python -m bots run` child; its stderr goes to a file so it can never block."""

    proc: asyncio.subprocess.Process
    log: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)

    async def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)


async def start_process(
    config: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 20,
    options: tuple[str, ...] = (),
    preexec_fn: Callable[[], object] | None = None,
) -> Process:
    """Start `chatlane run` and wait until it serves; fails with its stderr if it dies."""
    err = log.open("ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots",
            *options,
            "run",
            "--config",
            str(config),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,
        )
    finally:
        err.close()
    child = Process(proc, log)
    start = _size(log)
    async with asyncio.timeout(timeout):
        while True:
            text = _read_from(log, start)
            if b"chatlane is up" in text and (m := _UP.search(text)):
                child.port = int(m.group(1))
                return child
            if proc.returncode is not None:
                raise AssertionError(f"chatlane exited {proc.returncode}:\n{child.stderr()}")
            await asyncio.sleep(0.02)


def _size(path: Path) -> int:
    return path.stat().st_size


def _read_from(path: Path, offset: int) -> bytes:
    return path.read_bytes()[offset:]


# ------------------------------------------------------------ in-process API
class FlakyAgent:
    """An agent boundary that fails or is slow on a deterministic share of turns.

    Whether a turn fails or is slow is drawn from a hash of its newest message, so a
    run is reproducible and a test can predict which replies must be failures.
    """

    name = "flaky"

    def __init__(
        self, fail: float = 0.0, slow: float = 0.0, slow_s: float = 0.05, delay_s: float = 0.0
    ) -> None:
        self.fail, self.slow, self.slow_s, self.delay_s = fail, slow, slow_s, delay_s
        self.calls = 0
        self.running = 0

    @staticmethod
    def draw(text: str, salt: str) -> float:
        digest = hashlib.blake2b(f"{salt}:{text}".encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "big") / 2**64

    def fails(self, text: str) -> bool:
        return self.draw(text, "fail") < self.fail

    async def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        self.calls += 1
        self.running += 1
        try:
            said = turn.new_messages[-1].content
            wait = self.delay_s + (self.slow_s if self.draw(said, "slow") < self.slow else 0.0)
            if wait:
                await asyncio.sleep(wait)
            if self.fails(said):
                raise AgentError("upstream model returned 500 (fake)")
            yield f"ok: {said} (turn {turn.turn})"
        finally:
            self.running -= 1

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class Api:
    """A real HttpService in this process, and an aiohttp client session for it."""

    runtime: Runtime
    service: HttpService
    http: aiohttp.ClientSession
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    async def post(
        self, payload: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """POST a body (JSON-encoded unless bytes); the status, parsed JSON and headers."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        # aiohttp warns that a large bytes body blocks the loop; a file object streams.
        sent: bytes | io.BytesIO = io.BytesIO(data) if len(data) > 64 * 1024 else data
        async with self.http.post(self.url + COMPLETIONS, data=sent, headers=hdrs) as resp:
            raw = await resp.read()
            self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
            if resp.content_type == "text/event-stream":  # `"stream": true` was asked for
                return resp.status, {"stream": raw.decode()}, resp.headers
            return resp.status, json.loads(raw) if raw else {}, resp.headers


@contextlib.asynccontextmanager
async def serve(
    tmp_path: Path,
    *,
    agent: Agent | None = None,
    extra: str = "",
    env: Mapping[str, str] | None = None,
    state: Path | None = None,
) -> AsyncIterator[Api]:
    """The HTTP API over a temporary store, with `agent` in place of the configured one."""
    loaded = load_config(write_config(tmp_path, extra, state=state), env=dict(env or {}))
    runtime = Runtime.build(loaded, agent=agent)
    service = HttpService(runtime)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=200)) as http:
        try:
            await service.start()
            yield Api(runtime, service, http)
        finally:
            await runtime.gateway.close()
            await service.stop()
            await runtime.close()


# ------------------------------------------------------------ state checks
@dataclass(slots=True)
class StateReport:
    """What a restart would find in a state directory."""

    entries: dict[str, str]
    """key -> session id of every entry that parses."""
    damaged: list[str]
    transcripts: dict[str, list[ChatMessage]]
    """session id -> every readable record."""
    bad_lines: int
    stray: list[Path]
    """Files that are neither entries, transcripts, locks nor temp files."""


_ENTRY_FIELDS = {
    "key": str,
    "sessionId": str,
    "platform": str,
    "createdAt": float,
    "sessionStartedAt": float,
    "lastInteractionAt": float,
    "updatedAt": float,
    "turns": int,
}


def _entry(obj: Any) -> tuple[str, str]:
    """(key, session id) of a well-formed entry; ValueError otherwise. Written here, not
    imported, so the check does not trust the code under test."""
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    for name, kind in _ENTRY_FIELDS.items():
        value = obj.get(name)
        ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
        if not ok or isinstance(value, bool):
            raise ValueError(f"field {name!r} missing or of the wrong type")
    if not re.fullmatch(r"[0-9a-f]{32}", obj["sessionId"]):
        raise ValueError("malformed sessionId")
    return validate_key(obj["key"]), obj["sessionId"]


def inspect_state(root: Path) -> StateReport:
    """Read every entry and transcript directly from disk (no store, no quarantine)."""
    entries: dict[str, str] = {}
    damaged: list[str] = []
    for path in sorted((root / "sessions").glob("*/*/*.json")):
        try:
            key, session_id = _entry(json.loads(path.read_bytes()))
        except (ValueError, UnicodeDecodeError) as exc:
            damaged.append(f"{path.name}: {exc}")
            continue
        entries[key] = session_id
    transcripts: dict[str, list[ChatMessage]] = {}
    bad = 0
    for path in sorted((root / "transcripts").glob("*/*.jsonl")):
        records, skipped = jsonl.read_all(path)
        transcripts[path.stem] = records
        bad += skipped
    stray = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and not (p.suffix in (".json", ".jsonl", ".lock", ".turn", ".tmp") or p.parent.name == "quarantine")
    ]
    return StateReport(entries, damaged, transcripts, bad, stray)


# ------------------------------------------------------------ real filesystem faults
@contextlib.contextmanager
def mounted(target: Path, *options: str) -> Iterator[bool]:
    """`mount <options> <target>` for the block; yields False when this host forbids it."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, check=False)
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def remount(target: Path, mode: str) -> None:
    """Make a bind mount read-only (`ro`) or writable (`rw`) again.

    Going read-only fails with EBUSY while any file on it is open for writing; a turn
    lock is released just after its reply is sent, so retry for a moment.
    """
    for _ in range(100):
        done = subprocess.run(
            ["mount", "-o", f"remount,bind,{mode}", str(target)], capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"cannot remount {target} {mode}: {done.stderr}")


def fill_disk(where: Path) -> Path:
    """Write a file in `where` until the filesystem says ENOSPC; delete it to free the space."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler
