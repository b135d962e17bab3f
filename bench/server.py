"""A real `chatlane run` in a subprocess (HTTP API, echo agent, file store), as a user runs it."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_RUNNING = re.compile(r"http: running \(.*?(http://\S+?/v1)")


def write_config(folder: Path, *, queue_cap: int, max_concurrent_turns: int = 16) -> Path:
    """A config: HTTP on a free port, echo agent, file store in `folder`/state."""
    path = folder / "chatlane.toml"
    path.write_text(
        "[agent]\n"
        'backend = "echo"\n'
        "[http]\n"
        "port = 0\n"
        "[queue]\n"
        f"cap = {queue_cap}\n"
        f"max_concurrent_turns = {max_concurrent_turns}\n"
        "[store]\n"
        'backend = "files"\n'
        f"path = {json.dumps(str(folder / 'state'))}\n",
        encoding="utf-8",
    )
    return path


def read_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak) / VmSize of a process, in kB, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "VmSize"):
                out[name] = int(rest.split()[0])
    return out


class Server:
    """`python -m bots run --config CONFIG`; its log is drained so the pipe never fills."""

    def __init__(self, config: Path) -> None:
        self.config = config
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("CHATLANE_HTTP_TOKEN", None)
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, "-m", "bots", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.log: collections.deque[str] = collections.deque(maxlen=200)
        self.base_url = ""
        self._up = threading.Event()
        self._reader = threading.Thread(target=self._drain, name="server-log", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            if not self._up.is_set() and (m := _RUNNING.search(line)):
                self.base_url = m.group(1)
                self._up.set()
        self._up.set()  # exited: wake the waiter, which sees no URL

    def wait_up(self, timeout: float = START_TIMEOUT_S) -> str:
        """The API root (`http://127.0.0.1:PORT/v1`) once the server logged it."""
        self._up.wait(timeout)
        if not self.base_url:
            self.stop()
            raise RuntimeError("chatlane did not start:\n" + "\n".join(self.log))
        return self.base_url

    def status(self) -> dict[str, int]:
        return read_status(self.pid)

    def stop(self) -> int:
        """SIGTERM (graceful), SIGKILL if it hangs; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sessions_list(config: Path) -> list[dict[str, Any]]:
    """What `chatlane sessions list --json` says is stored."""
    done = subprocess.run(
        [sys.executable, "-m", "bots", "sessions", "list", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"chatlane sessions list failed ({done.returncode}): {done.stderr[-2000:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def settle(seconds: float = 0.5) -> None:
    """Let the server finish its post-reply work (lane teardown) before reading memory."""
    time.sleep(seconds)
