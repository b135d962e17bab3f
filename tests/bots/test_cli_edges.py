"""The CLI as an operator meets it: check agrees with run, strict config, logs, sessions admin."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from core.conversation.reserver import new_session_id
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import SessionEntry, TurnCommit
from core.ops import key_hash
from core.store.files.store import FileStore
from tests.bots.test_cli import ROOT, chatlane, config


# ------------------------------------------------------------------ version, log options
def test_version_prints_the_package_version() -> None:
    done = chatlane("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == "chatlane 0.1.0"


def test_log_options_work_after_the_subcommand_too(tmp_path: Path) -> None:
    path = config(tmp_path)
    after = chatlane("check", "--config", str(path), "--log-level", "DEBUG", "--log-format", "json")
    before = chatlane("--log-level", "DEBUG", "check", "--config", str(path))
    assert after.returncode == 0, after.stderr
    assert before.returncode == 0, before.stderr


def test_a_failing_model_is_one_error_line_per_message_and_chat_exits_1(tmp_path: Path) -> None:
    """Before: 97 log lines (two chained tracebacks) per failure, and exit 0."""
    path = config(
        tmp_path,
        '[agent]\nbackend = "openai"\n[agent.openai]\nbase_url = "http://127.0.0.1:1/v1"\nmax_retries = 0\n',
    )
    done = chatlane("chat", "--config", str(path), stdin="one\ntwo\n")
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert done.returncode == 1
    assert len(errors) == 2, done.stderr  # one per message
    assert all("cannot connect" in line for line in errors), errors
    assert "Traceback" not in done.stderr
    assert done.stdout.count("couldn't answer") == 2
    debug = chatlane("chat", "--config", str(path), "--log-level", "DEBUG", stdin="one\n")
    assert "Traceback" in debug.stderr  # the details are one flag away


def test_one_info_line_per_turn_with_key_session_outcome_and_latency(tmp_path: Path) -> None:
    path = config(tmp_path)
    done = chatlane(
        "chat", "--config", str(path), "--log-level", "INFO", "--log-format", "json", stdin="a\nb\n"
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    turns = [r["message"] for r in records if r["message"].startswith("turn ")]
    assert len(turns) == 2, done.stderr
    for n, line in enumerate(turns, 1):
        # JSON lines are shipped off the host: the key is there, hashed (core/ops/logs.py)
        assert f"key=key#{key_hash('agent:main:console:local:local')} " in line
        assert f" turn={n} " in line and "outcome=answered" in line and "latency_ms=" in line
    assert all(set(r) >= {"ts", "level", "logger", "message"} for r in records)


# ------------------------------------------------------------------ check agrees with run
REFUSED = {
    "public-host-no-token": ('[http]\nhost = "0.0.0.0"\n', "without a token"),
    "state-path-is-a-file": ('[store]\npath = "afile"\n', "Not a directory"),
    "state-path-under-a-file": ('[store]\npath = "afile/state"\n', "Not a directory"),
    "redis-url-unparsable": (
        '[store]\nbackend = "redis"\nurl = "redis://:pa#ss@127.0.0.1:1/0"\n',
        "not a Redis URL",
    ),
    "nothing-enabled": ("[http]\nenabled = false\n", "nothing to run"),
    "openai-url-not-http": (
        '[agent]\nbackend = "openai"\n[agent.openai]\nbase_url = "localhost:11434"\n',
        "http(s)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_check_refuses_whatever_run_refuses(tmp_path: Path, case: str) -> None:
    extra, problem = REFUSED[case]
    (tmp_path / "afile").write_text("not a folder")
    path = tmp_path / "chatlane.toml"
    # Only the section under test: no [store] or [http] of the default test config to clash.
    base = "" if "[store]" in extra else f'[store]\npath = "{tmp_path / "state"}"\n'
    port = "" if "[http]" in extra else "[http]\nport = 0\n"
    path.write_text(base + port + extra, encoding="utf-8")
    checked = chatlane("check", "--config", str(path))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert problem in checked.stderr and "config NOT OK" in checked.stdout
    ran = chatlane("run", "--config", str(path), timeout=30)
    assert ran.returncode != 0
    assert problem in ran.stderr
    assert "Traceback" not in checked.stderr + ran.stderr
    assert "pa#ss" not in checked.stderr + ran.stderr and "ss@" not in checked.stderr + ran.stderr


def test_check_warns_about_a_remote_model_without_an_api_key(tmp_path: Path) -> None:
    path = config(
        tmp_path, '[agent]\nbackend = "openai"\n[agent.openai]\nbase_url = "https://api.example.com/v1"\n'
    )
    done = chatlane("check", "--config", str(path))
    assert done.returncode == 0
    assert "warning:" in done.stderr and "OPENAI_API_KEY" in done.stderr


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('[http]\nport = "8765"\n', "http.port", "valid integer"),
        ('[http]\nenabled = "yes"\n', "http.enabled", "valid boolean"),
        ("[queue]\ncap = 2.0\n", "queue.cap", "valid integer"),
        ('[agent]\nbacknd = "echo"\n', "agent.backnd", "did you mean `backend`?"),
        ('[sesion]\nscope = "user"\n', "sesion", "did you mean `session`?"),
    ],
)
def test_config_types_are_strict_and_misspelt_keys_get_a_suggestion(
    tmp_path: Path, extra: str, key: str, problem: str
) -> None:
    path = tmp_path / "chatlane.toml"
    path.write_text(extra, encoding="utf-8")
    done = chatlane("check", "--config", str(path))
    assert done.returncode == 2
    assert f"{key}: " in done.stderr and problem in done.stderr, done.stderr


# ------------------------------------------------------------------ sessions
def _seed(state: Path, rows: list[tuple[str, float]], records: int = 0) -> list[SessionEntry]:
    """Entries as a store holds them, with chosen last-activity times."""

    async def go() -> list[SessionEntry]:
        store = FileStore(state)
        out = []
        try:
            for key, at in rows:

                def mint(k: SessionKey, at: float = at) -> SessionEntry:
                    return SessionEntry(k, new_session_id(), "http", at, at, at, at, 1)

                entry, _ = await store.reserve(SessionKey(key), lambda e: True, mint)
                if records:  # one turn, committed at `at`, as the gateway would
                    async with store.lock_turn(SessionKey(key)) as lease:
                        said = [ChatMessage("user", f"said in {key}", at)]
                        await store.commit(TurnCommit(lease, entry.session_id, uuid.uuid4().hex, said, at, 1))
                out.append(entry)
        finally:
            await store.close()
        return out

    return asyncio.run(go())


def test_sessions_list_fits_100_columns_sorts_by_activity_and_filters(tmp_path: Path) -> None:
    now = time.time()
    long_user = "U" + "x" * 80
    _seed(
        tmp_path / "state",
        [
            ("agent:main:http:old:api", now - 300),
            (f"agent:main:slack:{long_user}:C1:1700000000.000100", now - 100),
            ("agent:main:discord:42:7", now - 200),
        ],
    )
    path = config(tmp_path)
    done = chatlane("sessions", "list", "--config", str(path))
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and max(len(line) for line in lines) <= 100, lines
    assert [line.split(":")[2] for line in lines[1:4]] == ["slack", "discord", "http"]
    assert lines[-1] == "3 sessions"
    limited = chatlane("sessions", "list", "--config", str(path), "--limit", "1").stdout.splitlines()
    assert len(limited) == 3 and "showing 1" in limited[-1]
    only = chatlane("sessions", "list", "--config", str(path), "--platform", "discord").stdout.splitlines()
    assert [line.split()[0] for line in only[1:-1]] == ["agent:main:discord:42:7"]
    wide = chatlane("sessions", "list", "--config", str(path), "--wide").stdout
    assert long_user in wide


def test_sessions_list_into_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    now = time.time()
    _seed(tmp_path / "state", [(f"agent:main:http:user{i:04d}:api", now - i) for i in range(1500)])
    path = config(tmp_path)
    done = subprocess.run(
        f"{sys.executable} -m bots sessions list --config {path} | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.startswith("KEY")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0


def test_sessions_reset_of_an_unknown_key_says_so_unless_create(tmp_path: Path) -> None:
    path = config(tmp_path)
    key = "agent:main:http:nobody:api"
    refused = chatlane("sessions", "reset", key, "--config", str(path))
    assert refused.returncode == 1 and "no session" in refused.stderr
    assert "0 sessions" in chatlane("sessions", "list", "--config", str(path)).stdout
    created = chatlane("sessions", "reset", key, "--config", str(path), "--create")
    assert created.returncode == 0 and "new session" in created.stdout


def test_sessions_show_can_show_the_transcript_from_before_a_reset(tmp_path: Path) -> None:
    key = "agent:main:http:ann:api"
    [old] = _seed(tmp_path / "state", [(key, time.time())], records=1)
    path = config(tmp_path)
    reset = chatlane("sessions", "reset", key, "--config", str(path))
    assert reset.returncode == 0 and f"--session {old.session_id}" in reset.stdout
    now = chatlane("sessions", "show", key, "--config", str(path))
    assert "said in" not in now.stdout
    before = chatlane("sessions", "show", key, "--config", str(path), "--session", old.session_id)
    assert before.returncode == 0 and f"said in {key}" in before.stdout
    bad = chatlane("sessions", "show", key, "--config", str(path), "--session", "../../etc/passwd")
    assert bad.returncode == 2


def test_sessions_prune_deletes_only_sessions_idle_longer_than_n_days(tmp_path: Path) -> None:
    now = time.time()
    day = 86_400
    seeded = _seed(
        tmp_path / "state",
        [
            ("agent:main:http:ancient:api", now - 90 * day),
            ("agent:main:discord:1:2", now - 31 * day),
            ("agent:main:http:recent:api", now - 29 * day),
            ("agent:main:slack:U1:C1", now - 60),
        ],
        records=1,
    )
    path = config(tmp_path)
    dry = chatlane("sessions", "prune", "--idle-days", "30", "--dry-run", "--config", str(path))
    assert dry.returncode == 0 and dry.stdout.count("would delete") == 2
    done = chatlane("sessions", "prune", "--idle-days", "30", "--config", str(path))
    assert done.returncode == 0 and "deleted 2 " in done.stdout, done.stdout + done.stderr
    listed = json.loads(chatlane("sessions", "list", "--json", "--config", str(path)).stdout)
    assert sorted(r["key"] for r in listed) == ["agent:main:http:recent:api", "agent:main:slack:U1:C1"]
    store = FileStore(tmp_path / "state")
    kept = {e.session_id for e in seeded[2:]}
    assert {p.stem for p in (tmp_path / "state" / "transcripts").glob("*/*.jsonl")} == kept
    asyncio.run(store.close())
