"""The CLI does what README and docs/ say: `--config` before the subcommand, every config
problem listed with its key, and piped `/help` / `/status` answered locally."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bots.test_cli import chatlane, config


def test_config_before_the_subcommand_works(tmp_path: Path) -> None:
    """Before: `chatlane --config X check` exited 2 (the option was only known after it)."""
    path = config(tmp_path)
    before = chatlane("--config", str(path), "check")
    after = chatlane("check", "--config", str(path))
    assert before.returncode == 0, before.stderr
    assert after.returncode == 0, after.stderr
    assert f"config OK: {path}" in before.stdout
    assert before.stdout == after.stdout


def test_check_lists_every_config_problem_with_its_key(tmp_path: Path) -> None:
    """Before: only the first, then "(and 2 more problems)"."""
    path = config(tmp_path, "[queue]\nmode = 'fastest'\ncap = 'many'\n[agent]\nbackend = 7\n")
    done = chatlane("--config", str(path), "check")
    assert done.returncode == 2
    assert "3 problems:" in done.stderr
    for key in ("queue.mode", "queue.cap", "agent.backend"):
        assert f"\n  {key}: " in done.stderr, done.stderr
    assert "more problems" not in done.stderr


def test_every_missing_secret_is_named(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "[discord]\nenabled = true\ntoken_env = 'NOPE_ONE'\n"
        "[slack]\nenabled = true\nbot_token_env = 'NOPE_TWO'\n",
    )
    done = chatlane("check", "--config", str(path))
    assert done.returncode == 2
    assert "NOPE_ONE is not set" in done.stderr and "NOPE_TWO is not set" in done.stderr


def test_one_problem_is_one_problem(tmp_path: Path) -> None:
    path = config(tmp_path, 'host = "0.0.0.0"\n')  # the API off loopback without a token
    done = chatlane("check", "--config", str(path))
    assert done.returncode == 1
    assert "(1 problem)" in done.stdout, done.stdout


def test_piped_help_and_status_are_answered_here_never_by_the_agent(tmp_path: Path) -> None:
    """Before: both went to the agent and were stored as turns."""
    path = config(tmp_path)
    done = chatlane("chat", "--config", str(path), "--user", "ann", stdin="/help\nhello\n/status\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "One message per line; each answer prints as it is written."
    assert any(line.startswith("echo: hello") for line in lines)
    assert any("agent:main:console:ann:local" in line for line in lines)  # /status, after hello's answer
    assert not any("/help" in line or "/status" in line for line in lines if line.startswith("echo"))
    shown = chatlane("sessions", "show", "agent:main:console:ann:local", "--config", str(path), "--json")
    transcript = json.loads(shown.stdout)["transcript"]
    assert [r["content"] for r in transcript if r["role"] == "user"] == ["hello"]
