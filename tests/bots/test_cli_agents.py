"""`chatlane check` with agents: the routing table, warnings for rules that never match,
plugin mistakes named by key; `chatlane sessions show` marks where a summary starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.plugin_agents import ENTRY_POINT, write_distribution

ROOT = Path(__file__).resolve().parents[2]


def chatlane(
    *args: str, stdin: str | None = None, path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), str(ROOT)])
    return subprocess.run(
        [sys.executable, "-m", "bots", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatlane.toml"
    path.write_text(f'[store]\npath = "state"\n[http]\nport = 0\n{text}', encoding="utf-8")
    return path


def test_check_prints_agents_and_the_routing_table_and_warns_about_shadowed_rules(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        '[agents.main]\n[agents.support]\nsystem_prompt = "Support."\nmodels = ["a", "b"]\n'
        '[agents.loud]\nbackend = "python"\nfactory = "tests.fakes.plugin_agents:make_shouting"\n'
        '[[bindings]]\nagent = "support"\nplatform = "discord"\nguild = "1"\n'
        '[[bindings]]\nagent = "loud"\nguild = "1"\nchannel = "2"\n'
        '[[bindings]]\nagent = "loud"\nplatform = "slack"\n',
    )
    done = chatlane("check", "--config", str(path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "agent: main backend=echo (default)" in out
    assert "agent: support backend=echo models=a,b" in out
    assert "agent: loud backend=python factory=tests.fakes.plugin_agents:make_shouting" in out
    table = out[out.index("routing (first match wins):") :].splitlines()[1:5]
    assert table == [
        "  1. platform=discord guild=1 -> support",
        "  2. guild=1 channel=2 -> loud",
        "  3. platform=slack -> loud",
        "  otherwise -> main",
    ]
    assert "binding 2. guild=1 channel=2: never matches: rule 1 (platform=discord guild=1)" in done.stderr
    assert "binding 3." not in done.stderr


def test_check_fails_on_a_bad_factory_naming_the_key_and_file(tmp_path: Path) -> None:
    path = config(
        tmp_path, '[agents.x]\nbackend = "python"\nfactory = "tests.fakes.plugin_agents:make_nothing"\n'
    )
    done = chatlane("check", "--config", str(path))
    assert done.returncode == 2
    assert (
        f"{path.resolve()}: agents.x.factory: factory 'tests.fakes.plugin_agents:make_nothing'" in done.stderr
    )
    assert "not an Agent" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "body",
    [
        "import sys\nsys.exit(0)\n",
        "import argparse\nargparse.ArgumentParser().parse_args()\n",  # `check --config X` is not its
    ],
)
def test_check_fails_naming_a_plugin_that_exits_at_import(tmp_path: Path, body: str) -> None:
    """A plugin module calling sys.exit(0) (or argparse on chatlane's argv) at import must
    not end `chatlane check` with 0 and no word (issue 29)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "quitter.py").write_text(body + "def make(options):\n    return None\n", encoding="utf-8")
    path = config(tmp_path, '[agents.q]\nbackend = "python"\nfactory = "quitter:make"\n')
    done = chatlane("check", "--config", str(path), path=site)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert f"{path.resolve()}: agents.q.factory:" in done.stderr
    assert "importing 'quitter' called sys.exit(" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_finds_a_backend_registered_by_an_installed_package(tmp_path: Path) -> None:
    site = write_distribution(tmp_path / "site")
    path = config(tmp_path, f'[agents.reg]\nbackend = "{ENTRY_POINT}"\n')
    found = chatlane("check", "--config", str(path), path=site)
    missing = chatlane("check", "--config", str(path))  # the package is not installed there
    assert found.returncode == 0, found.stderr
    assert f"agent: reg backend={ENTRY_POINT}" in found.stdout
    assert missing.returncode == 2 and "agents.reg.backend: unknown backend 'testplug'" in missing.stderr


def test_sessions_show_marks_where_the_summary_starts(tmp_path: Path) -> None:
    path = config(
        tmp_path, '[agent]\ncompact_after_tokens = 60\ncompact_keep_recent = 2\nmodels = ["a", "b"]\n'
    )
    said = "/model b\n" + "".join(f"line {i} with some words to weigh it down a little\n" for i in range(5))
    chat = chatlane("chat", "--config", str(path), "--user", "ann", stdin=said)
    assert chat.returncode == 0, chat.stderr
    shown = chatlane("sessions", "show", "agent:main:console:ann:local", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    mark = next(i for i, line in enumerate(lines) if line.startswith("=== summary"))
    assert "except the last 2" in lines[mark]
    assert lines[mark + 1].startswith("--- system")
    assert lines[mark + 2].startswith("you said: line 0")
    assert sum(line.startswith("--- user") for line in lines) == 5  # nothing was dropped
    assert "summarised" in chat.stdout and "now uses b" in chat.stdout
    as_json = chatlane("sessions", "show", "agent:main:console:ann:local", "--json", "--config", str(path))
    shown_json = json.loads(as_json.stdout)
    assert shown_json["model"] == "b"
    assert [r.get("summary", False) for r in shown_json["transcript"]].count(True) >= 1
