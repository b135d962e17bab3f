"""`ChatlaneProcess` and `run_cli`: the one runner of real `chatlane` processes (tests and bench)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from bots.readiness import UP
from bots.testing import ChatlaneProcess, run_cli, write_config


async def test_a_started_process_serves_its_api_and_stops_cleanly(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    async with await ChatlaneProcess.start(config, tmp_path / "run.log") as child:
        assert child.base_url == f"http://127.0.0.1:{child.port}/v1"
        async with aiohttp.ClientSession() as http, http.get(child.url + "/healthz") as resp:
            assert resp.status == 200
        assert child.status()["VmRSS"] > 0
        code = await child.stop()
    assert code == 0, child.stderr()
    assert UP in child.stderr()


async def test_a_process_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[queue]\nmode = 'fastest'\n")
    with pytest.raises(RuntimeError, match=r"(?s)chatlane exited 2 before it was up:.*queue\.mode"):
        await ChatlaneProcess.start(config, tmp_path / "run.log", timeout=60)


async def test_a_restart_logging_to_the_same_file_waits_for_its_own_start(tmp_path: Path) -> None:
    """The log is appended to across runs: the previous run's "up" line must not count,
    or a restart would be reported up (with the old port) before it listens."""
    config, log = write_config(tmp_path), tmp_path / "run.log"
    first = await ChatlaneProcess.start(config, log)
    await first.kill()
    second = await ChatlaneProcess.start(config, log)
    try:
        assert second.stderr().count(UP) == 2, "returned before its own start"
        async with aiohttp.ClientSession() as http, http.get(second.url + "/healthz") as resp:
            assert resp.status == 200
    finally:
        assert await second.stop() == 0


def test_run_cli_gives_the_exit_code_and_output_and_can_unset_variables(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    listed = run_cli("sessions", "list", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    public = write_config(tmp_path / "public", 'host = "0.0.0.0"')
    refused = run_cli("run", "--config", str(public), env={"CHATLANE_HTTP_TOKEN": None})
    assert refused.returncode == 1 and "without a token" in refused.stderr
