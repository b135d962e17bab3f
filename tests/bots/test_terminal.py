"""`chatlane chat` on a real pseudo-terminal, typed at as a person would."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bots.testing.fake_llm import FakeLLM, tool_then_answer
from tests.bots.test_cli import ROOT, chatlane, config
from tests.support.tools import SERVER, counted


class Tty:
    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd
        self.seen = ""

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Read until `pattern` shows up after what earlier expects consumed."""
        deadline = time.monotonic() + timeout
        while True:
            if m := re.search(pattern, self.seen):
                self.seen = self.seen[m.end() :]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never saw {pattern!r}; got:\n{self.seen}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child exited and closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {pattern!r}; got:\n{self.seen}")
                self.seen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")

    def exit_code(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_status = os.waitpid(self.pid, os.WNOHANG)
            if with_status[0]:
                return os.waitstatus_to_exitcode(with_status[1])
            try:  # keep draining, or the child may block on a full terminal
                if select.select([self.fd], [], [], 0.05)[0]:
                    self.seen += os.read(self.fd, 4096).decode("utf-8", "replace")
            except OSError:
                time.sleep(0.05)
        raise AssertionError("chatlane chat did not exit")


@contextmanager
def terminal(tmp_path: Path, extra: str = "") -> Iterator[Tty]:
    path = config(tmp_path, extra)
    pid, fd = pty.fork()
    if pid == 0:  # the child: chatlane chat on the terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "bots", "chat", "--config", str(path)])
    tty = Tty(pid, fd)
    try:
        yield tty
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_interactive_chat_edits_lines_streams_and_handles_commands_locally(tmp_path: Path) -> None:
    with terminal(tmp_path) as t:
        banner = t.expect(r"chatlane chat as 'local'.*\n")
        assert "/new" in banner.group(0) and "/help" in banner.group(0)
        t.expect("you> ")
        t.type("helo\x1b[Dl\r")  # a typo mended with the left arrow: readline line editing
        t.expect(r"echo: hello\n\(turn 1 of session (\w+);")
        t.expect("you> ")
        t.type("/help\r")
        t.expect(r"/status .*\n")  # answered here: the agent never saw it (turn 2 is next)
        t.expect("you> ")
        t.type("/status\r")
        t.expect(r"Session `\w+`: 1 turns")
        t.expect("you> ")
        t.type("again\r")
        t.expect(r"echo: again\n\(turn 2 ")
        t.expect("you> ")
        t.type("/new\r")
        t.expect("Started a new conversation.")
        t.expect("you> ")
        t.type("fresh\r")
        t.expect(r"echo: fresh\n\(turn 1 .*new session\)")
        t.expect("you> ")
        # Ctrl-C at the prompt: the line is dropped, chat goes on. CPython's readline checks
        # for signals only when its select() is interrupted: a SIGINT that lands between
        # echoing a key and the next select() waits for the next key press. A person then
        # presses Ctrl-C again, and so does this test (once).
        t.type("half a line")
        t.expect("half a line")
        t.type("\x03")
        try:
            t.expect(r"\^C\n", timeout=3.0)
        except AssertionError:
            t.type("\x03")
            t.expect(r"\^C\n")
        t.expect("you> ")
        t.type("\x04")  # Ctrl-D quits
        assert t.exit_code() == 0


def test_ctrl_c_mid_answer_still_shows_the_answer_and_twice_quits(tmp_path: Path) -> None:
    with terminal(tmp_path, "[agent]\necho_delay_ms = 1500\n") as t:
        t.expect("you> ")
        t.type("slow one\r")
        t.expect("echo: slow one")  # the first piece is shown before the answer is done
        t.type("\x03")
        t.expect(r"still answering")
        t.expect(r"\(turn 1 of session")  # ... and the rest of it does arrive
        t.expect("you> ")
        t.type("another\r")
        t.expect("echo: another")
        t.type("\x03")
        t.expect("still answering")
        t.type("\x03")
        t.expect(r"chatlane sessions show agent:main:console:local:local")
        assert t.exit_code() == 130
    shown = chatlane(
        "sessions", "show", "agent:main:console:local:local", "--config", str(tmp_path / "chatlane.toml")
    )
    assert "echo: another" in shown.stdout  # quitting mid-answer still stored it


@contextmanager
def llm_in_thread(llm: FakeLLM) -> Iterator[FakeLLM]:
    """The fake model on its own event loop in a thread (this test drives a pty, synchronously)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(llm.start(), loop).result(10)
    try:
        yield llm
    finally:
        asyncio.run_coroutine_threadsafe(llm.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_the_terminal_shows_tool_status_and_asks_approvals_y_or_n(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    llm = FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t}))
    with llm_in_thread(llm):
        agent = (
            f'[agent]\nbackend = "openai"\n[agent.openai]\nbase_url = "{llm.base_url}"\nmax_retries = 0\n'
            f'[[agent.mcp]]\nname = "test"\ncommand = {json.dumps(SERVER)}\n'
            f'env = {{ CALLS_FILE = "{calls}" }}\napproval = ["delete_file"]\n'
        )
        with terminal(tmp_path, "enabled = false\n" + agent) as tty:
            tty.expect("you> ")
            tty.type("a.txt\r")
            tty.expect(r"Allow the tool delete_file with \{\"path\": \"a.txt\"\}\? \[y/N\] ")
            tty.type("y\r")
            tty.expect("Used delete_file")
            tty.expect("using the tool: deleted a.txt")
            tty.expect("you> ")
            tty.type("b.txt\r")
            tty.expect(r"\[y/N\] ")
            tty.type("n\r")
            tty.expect("A person denied this tool call")
            tty.expect("you> ")
            tty.type("\x04")
            assert tty.exit_code() == 0
    assert counted(calls) == ["delete_file"]
