"""What an operator reads: JSON logs from the first line on, one access line per refused
HTTP request (rate-limited), and `sessions show` that says when it shows only part."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bots.testing import eventually
from core.ops import key_hash
from tests.bots.test_cli import chatlane, config
from tests.support.http import body, serve

KEY = "agent:main:console:ann:local"


def test_json_logs_are_json_from_the_first_line_with_turn_fields(tmp_path: Path) -> None:
    """Before: the first line ("chatlane: using config ...") was plain text."""
    path = config(tmp_path)
    done = chatlane(
        "chat",
        "--config",
        str(path),
        "--user",
        "ann",
        "--log-level",
        "INFO",
        "--log-format",
        "json",
        stdin="a\nb\n",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    records = [json.loads(line) for line in lines]  # every line, the first included
    assert records[0]["message"] == f"using config {path}" and records[0]["config"] == str(path)
    turns = [r for r in records if r["message"].startswith("turn ")]
    assert [t["turn"] for t in turns] == [1, 2]
    for t in turns:
        assert t["key_hash"] == key_hash(KEY)
        assert t["outcome"] == "answered"
        assert isinstance(t["latency_ms"], int)
        assert f"key=key#{key_hash(KEY)} " in t["message"]
    # Shipped lines name no user and channel: the key appears only hashed, on every line.
    # (Before: the turn line's message carried the clear key.)
    assert KEY not in done.stderr


def test_a_config_error_is_json_too(tmp_path: Path) -> None:
    path = config(tmp_path, "[queue]\nmode = 'fastest'\n")
    done = chatlane("--log-format", "json", "check", "--config", str(path))
    assert done.returncode == 2
    [record] = [json.loads(line) for line in done.stderr.splitlines()]
    assert record["level"] == "ERROR" and record["problems"][0][0] == "queue.mode"


async def test_refused_requests_get_one_access_line_each_up_to_a_cap_then_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a refused request (401/400/429) left no trace in the log."""
    async with serve(tmp_path, env={"CHATLANE_HTTP_TOKEN": "right"}) as s:
        s.service.refusals.per_window = 3
        s.service.refusals.window_s = 0.3
        caplog.set_level(logging.INFO, logger="chatlane.http")
        for _ in range(5):
            status, _, _ = await s.post(body("hi"), {"Authorization": "Bearer wrong"})
            assert status == 401
        status, _, _ = await s.post(b"{not json", {"Authorization": "Bearer right"})
        assert status == 400
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused POST")]
        assert lines == ["refused POST /v1/chat/completions 401 from 127.0.0.1"] * 3

        async def summary() -> bool:
            await s.post(body("hi"), {"Authorization": "Bearer wrong"})
            return any("more requests" in r.getMessage() for r in caplog.records)

        assert await eventually(summary, timeout=5)
        counted = next(r.getMessage() for r in caplog.records if "more requests" in r.getMessage())
        # 2 more 401s, the 400, and the polls' own requests until the window ended
        assert int(counted.split()[1]) >= 3, counted


def test_sessions_show_says_when_it_shows_only_the_last_records_and_pages(tmp_path: Path) -> None:
    """Before: it silently showed the last records only, and had no --limit / --all."""
    path = config(tmp_path)
    assert chatlane("chat", "--config", str(path), "--user", "ann", stdin="one\ntwo\nthree\n").returncode == 0
    part = chatlane("sessions", "show", KEY, "--config", str(path), "--limit", "2")
    assert part.returncode == 0, part.stderr
    assert "(showing the last 2 records; older ones exist" in part.stdout
    assert part.stdout.count("--- ") == 2
    whole = chatlane("sessions", "show", KEY, "--config", str(path), "--all", "--json")
    data = json.loads(whole.stdout)
    assert data["truncated"] is False and len(data["transcript"]) == 6
    limited = json.loads(
        chatlane("sessions", "show", KEY, "--config", str(path), "--limit", "4", "--json").stdout
    )
    assert limited["truncated"] is True
    assert [r["content"] for r in limited["transcript"] if r["role"] == "user"] == ["two", "three"]
    default = chatlane("sessions", "show", KEY, "--config", str(path))
    assert "older ones exist" not in default.stdout and default.stdout.count("--- ") == 6
