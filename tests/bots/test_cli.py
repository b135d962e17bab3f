"""The `chatlane` CLI as a person runs it: real processes, real files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bots.testing import ChatlaneProcess, run_cli

ROOT = Path(__file__).resolve().parents[2]


def chatlane(
    *args: str, cwd: Path | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd or ROOT, stdin=stdin, timeout=timeout)


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "chatlane.toml"
    path.write_text(f'[store]\npath = "state"\n[http]\nport = 0\n{extra}', encoding="utf-8")
    return path


def test_check_validates_and_says_what_would_start() -> None:
    done = chatlane("check", "--config", "config.example.toml")
    assert done.returncode == 0, done.stderr
    assert "http: would start" in done.stdout
    assert "discord: disabled" in done.stdout
    assert "config.example.toml" in done.stderr  # which file was read


def test_a_bad_config_exits_2_naming_the_key_and_file(tmp_path: Path) -> None:
    path = config(tmp_path, "[queue]\nmode = 'fastest'\n")
    done = chatlane("check", "--config", str(path))
    assert done.returncode == 2
    assert "queue.mode" in done.stderr and str(path) in done.stderr
    assert "Traceback" not in done.stderr


def test_no_config_is_never_picked_silently(tmp_path: Path) -> None:
    done = chatlane("check", cwd=tmp_path)
    assert done.returncode == 2
    assert "chatlane.toml" in done.stderr and "--config" in done.stderr


def test_enabled_bot_without_its_token_exits_2_before_connecting(tmp_path: Path) -> None:
    path = config(tmp_path, "[discord]\nenabled = true\ntoken_env = 'NOPE_NOT_SET'\n")
    done = chatlane("run", "--config", str(path))
    assert done.returncode == 2
    assert "NOPE_NOT_SET is not set" in done.stderr


def test_chat_reads_lines_and_sessions_list_shows_one_session(tmp_path: Path) -> None:
    path = config(tmp_path)
    done = chatlane("chat", "--config", str(path), "--user", "ann", stdin="hello\n\nhow are you?\n")
    assert done.returncode == 0, done.stderr
    replies = [line for line in done.stdout.splitlines() if line.startswith("echo:")]
    assert replies == ["echo: hello", "echo: how are you?"]
    assert "turn 2 " in done.stdout and "first thing I remember you saying: 'hello'" in done.stdout

    listed = chatlane("sessions", "list", "--config", str(path), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 1
    assert set(rows[0]) == {"key", "sessionId", "turns", "createdAt", "lastInteractionAt", "pending"}
    assert rows[0]["pending"] == 0
    assert rows[0]["key"] == "agent:main:console:ann:local"
    assert rows[0]["turns"] == 2

    shown = chatlane("sessions", "show", rows[0]["key"], "--config", str(path), "--json")
    transcript = json.loads(shown.stdout)["transcript"]
    assert [r["content"] for r in transcript if r["role"] == "user"] == ["hello", "how are you?"]

    reset = chatlane("sessions", "reset", rows[0]["key"], "--config", str(path))
    assert reset.returncode == 0
    again = chatlane("chat", "--config", str(path), "--user", "ann", stdin="back\n")
    assert "turn 1 " in again.stdout and "new session" in again.stdout


def test_sessions_show_rejects_a_malformed_key(tmp_path: Path) -> None:
    done = chatlane("sessions", "show", "agent:main:http:../../etc:x", "--config", str(config(tmp_path)))
    assert done.returncode == 2
    assert "invalid user" in done.stderr


@pytest.mark.slow
def test_several_chat_processes_with_one_user_write_one_conversation(tmp_path: Path) -> None:
    """Four processes, one --user, one store: one session, and turns never overlap —
    an overlap would make two turns read the same count and repeat a turn number."""
    path = config(tmp_path, "[agent]\necho_delay_ms = 20\n")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bots", "chat", "--config", str(path), "--user", "team"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [
        p.communicate("".join(f"p{n} line {i}\n" for i in range(8)), timeout=120)[0]
        for n, p in enumerate(procs)
    ]
    assert all(p.returncode == 0 for p in procs)
    turns = sorted(int(t) for out in outs for t in re.findall(r"\(turn (\d+) of session", out))
    sessions = {s for out in outs for s in re.findall(r"of session (\w+);", out)}
    assert turns == list(range(1, 33))
    assert len(sessions) == 1


async def test_run_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    child = await ChatlaneProcess.start(config(tmp_path), tmp_path / "run.log")
    code = await child.terminate()
    log = child.stderr()
    assert code == 0, log
    assert "discord: disabled" in log and "stopped" in log
