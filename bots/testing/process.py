"""chatlane as a user runs it: `chatlane run` as a child process, and the one-shot commands.

The one process runner of the test suite and the benchmarks. It starts `python -m bots`
with this interpreter and knows it is up by the lines named in bots/readiness.py:

    config = write_config(folder, "[queue]\\ncap = 50\\n")        # lines land in [http]
    async with await ChatlaneProcess.start(config, folder / "run.log") as child:
        ...  # child.url, child.base_url, child.status(), await child.kill()
    rows = json.loads(run_cli("sessions", "list", "--json", "--config", str(config)).stdout)

The child's stderr (its log) goes to a file, so a chatty child can never block on a
full pipe and the log survives for the failure message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from bots.readiness import API_ROOT, UP
from bots.testing.polling import eventually

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def write_config(folder: Path, extra: str = "", *, state: Path | None = None) -> Path:
    """`folder`/chatlane.toml: HTTP on a free port, echo agent, files store under `state`
    (default `folder`/state). `extra` follows `[http]`, so bare keys land in that section."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chatlane.toml"
    where = state if state is not None else folder / "state"
    path.write_text(
        f"[store]\npath = {json.dumps(str(where))}\n[http]\nport = 0\n{extra}\n", encoding="utf-8"
    )
    return path


def run_cli(
    *args: str,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60,
    env: Mapping[str, str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`chatlane ARGS...` to completion; its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "bots", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_environment(env),
        check=False,
    )


def read_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak) / VmSize of a process, in kB, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "VmSize"):
                out[name] = int(rest.split()[0])
    return out


class ChatlaneProcess:
    """A running `chatlane run --config CONFIG` child; stop it with `stop`, `terminate` or `kill`."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, log_start: int) -> None:
        self.proc, self.log, self._log_start = proc, log, log_start
        self.api_root = ""
        """`http://HOST:PORT` of its HTTP API once up; empty if the API is disabled."""

    @classmethod
    async def start(
        cls,
        config: Path,
        log: Path,
        *,
        env: Mapping[str, str | None] | None = None,
        options: tuple[str, ...] = (),
        timeout: float = START_TIMEOUT_S,
        cwd: Path | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> ChatlaneProcess:
        """Start it and wait until it logs that it is up; fails with its log if it exits first.

        `env` is laid over this process's environment; a None value removes that variable.
        `options` go before `run` (e.g. `("--log-level", "DEBUG")`). The log is appended to,
        so one file can hold several runs of a restart loop. `preexec_fn` runs in the
        child before it starts (e.g. to lower its RLIMIT_NOFILE).
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as err:
            log_start = err.tell()  # the end: earlier runs' lines are not this run's
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots", *options, "run", "--config", str(config),
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                env=_environment(env),
                preexec_fn=preexec_fn,
            )  # fmt: skip
        child = cls(proc, log, log_start)
        try:
            await eventually(child._came_up, timeout=timeout, interval=0.02)
        except BaseException:
            await child.kill()
            raise
        return child

    def _came_up(self) -> bool:
        # The lines are named in bots/readiness.py, where the launcher and the HTTP
        # service print them from.
        text = self._this_run().decode("utf-8", "replace")
        if UP in text:
            if m := API_ROOT.search(text):
                self.api_root = m.group(1)
            return True
        if self.proc.returncode is not None:
            raise RuntimeError(f"chatlane exited {self.proc.returncode} before it was up:\n{self.stderr()}")
        return False

    def _this_run(self) -> bytes:
        with self.log.open("rb") as f:
            f.seek(self._log_start)
            return f.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` of its HTTP API."""
        if not self.api_root:
            raise RuntimeError("this chatlane has no HTTP API (http.enabled = false?)")
        return self.api_root

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root, `http://127.0.0.1:PORT/v1`."""
        return self.url + "/v1"

    def stderr(self) -> str:
        """Its log so far (the whole file)."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def status(self) -> dict[str, int]:
        """Its memory (see `read_status`)."""
        return read_status(self.pid)

    async def kill(self) -> None:
        """SIGKILL, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 10)

    async def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (a graceful stop) and its exit code; TimeoutError if it does not stop."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL if it hangs past `timeout`; its exit code."""
        if self.proc.returncode is None:
            try:
                return await self.terminate(timeout)
            except TimeoutError:
                await self.kill()
        return await self.proc.wait()

    async def __aenter__(self) -> ChatlaneProcess:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _environment(overrides: Mapping[str, str | None] | None) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
