"""Each benchmark still runs and its correctness checks pass (tiny `--quick` sizes; no speed asserted).

A benchmark exits non-zero when a correctness check fails, so a broken benchmark or a
regression it detects (two sessions for one key, a lost turn) turns CI red here.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import common

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300
STACKS_AFTER_S = TIMEOUT_S - 30
WITHOUT_TESTS = (
    "import faulthandler, sys; "
    f"faulthandler.dump_traceback_later({STACKS_AFTER_S}, exit=True); "
    "sys.modules['tests'] = None; from bench.__main__ import main; sys.exit(main())"
)
"""`python -m bench`, with the `tests` package made unimportable: bench must run without it.
A run that has not finished after STACKS_AFTER_S prints every thread's stack and exits, so
a hang fails with where it hung rather than a bare timeout."""


def python(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """This interpreter on `args` from the project's root, with `env` added."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        check=False,
    )


def run_bench(name: str, tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    done = python("-c", WITHOUT_TESTS, name, "--quick", "--json", "--workdir", str(tmp_path))
    doc: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, doc, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "reserve",
        "scale",
        "pipeline",
        "big",
        "memory",
        "backfill",
        "deliveries",
        "streaming",
        "restart",
        "waiting",
    ],
)
def test_benchmark_runs_and_its_correctness_checks_pass(name: str, tmp_path: Path) -> None:
    code, doc, log = run_bench(name, tmp_path)
    assert code == 0, f"python -m bench {name} --quick exited {code}:\n{log[-4000:]}"
    (report,) = doc["benchmarks"]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert report["name"] == name
    assert report["checks"], "a benchmark that checks nothing proves nothing"
    assert not failed, failed
    assert all(m["n"] > 0 and m["median"] is not None for m in report["metrics"]), report["metrics"]
    assert doc["machine"]["cpu_count"] == os.cpu_count()
    assert list(tmp_path.iterdir()) == [], "the benchmark left temporary state behind"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", ["bench", "core", "bots"])
def test_benchmarks_and_the_shipped_package_import_nothing_from_tests(package: str) -> None:
    """bench/ runs from an installed chatlane, where tests/ does not exist; what it shares
    with the tests (agents, fakes, the process runner, redis-server) is in `bots.testing`."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "tests")
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_a_failed_check_makes_the_exit_code_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One failed correctness check fails the run, whatever the figures: exit code 1."""
    from bench.__main__ import BENCHMARKS, main
    from bench.common import Options
    from bench.report import Report

    async def wrong_but_fast(opts: Options) -> Report:
        report = Report("reserve")
        report.metric("resolve", "us", [1.0], target=100.0)
        report.check("one session per key", False, "2 sessions for one key")
        return report

    monkeypatch.setitem(BENCHMARKS, "reserve", wrong_but_fast)
    assert main(["reserve", "--json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["ok"] is False
    assert "check FAIL: one session per key (2 sessions for one key)" in out.err


def test_turn_cpu_answers_every_turn_in_order_and_reports_its_cpu(tmp_path: Path) -> None:
    """bench/turn_cpu.py (the core's CPU per turn, no HTTP) runs; it exits 1 itself when a
    turn comes back unanswered or out of order, so a 0 here means all 150 were right (50
    warm-up turns and 100 measured)."""
    done = python(str(ROOT / "bench" / "turn_cpu.py"), "100", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["n"] == 100 and got["main_thread_ms"] > 0 and got["process_ms"] >= got["main_thread_ms"]
    assert list(tmp_path.iterdir()) == []  # its scratch store is gone


@pytest.mark.parametrize("mode", ["keyed", "new"])
def test_server_cpu_runs_a_real_server_and_every_request_is_answered(mode: str, tmp_path: Path) -> None:
    """bench/server_cpu.py drives a real `chatlane run`; it exits 1 when a request failed."""
    done = python("-m", "bench.server_cpu", mode, "60", WORKDIR=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["mode"] == mode and got["n"] == 60 and got["requests_per_s"] > 0
    assert got["user_ms"] + got["sys_ms"] > 0


async def test_the_benchmarked_server_runs_the_code_bench_server_pythonpath_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started from the project's root, as the docs run the benches: the other checkout's
    `bots` must win over the root's, or a before/after compares main with itself."""
    other = tmp_path / "other"
    marker = tmp_path / "ran"
    (other / "bots").mkdir(parents=True)
    (other / "bots" / "__init__.py").write_text("")
    (other / "bots" / "__main__.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('other')\nraise SystemExit(3)\n"
    )
    monkeypatch.chdir(ROOT)
    monkeypatch.setitem(common.SERVER_ENV, "PYTHONPATH", str(other))
    config = common.server_config(tmp_path / "bench", queue_cap=10)
    refused = ""
    try:
        server = await common.start_server(config)
    except RuntimeError as exc:
        refused = str(exc)
    else:
        await server.stop()  # the root's server came up: stopped, not left running
    assert "exited 3" in refused, "the project root's server ran, not the one named"
    assert marker.read_text() == "other"
