"""What an operator does to a real `chatlane run`: Ctrl-C twice, point Slack at the wrong place."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path

import aiohttp
from aiohttp import web

from bots.readiness import STOPPING
from bots.testing import ChatlaneProcess, eventually, write_config
from tests.support.http import COMPLETIONS, body

ROOT = Path(__file__).resolve().parents[2]


async def _equals(value: Awaitable[float], expected: float) -> bool:
    return await value == expected


async def test_a_second_ctrl_c_during_shutdown_still_answers_every_waiting_client(tmp_path: Path) -> None:
    """Before: the second SIGINT killed the process; waiting clients got no response at all."""
    config = write_config(tmp_path, "[agent]\necho_delay_ms = 3000\n[queue]\nshutdown_timeout_s = 60\n")
    child = await ChatlaneProcess.start(config, tmp_path / "run.log")
    outcomes: list[tuple[int, str]] = []
    async with aiohttp.ClientSession() as http:

        async def ask(text: str) -> None:
            try:
                async with http.post(child.url + COMPLETIONS, json=body(text, user="w")) as r:
                    data = await r.json()
                    outcomes.append((r.status, data.get("error", {}).get("code", "")))
            except aiohttp.ClientError as exc:
                outcomes.append((0, type(exc).__name__))

        async def metric(name: str) -> float:
            async with http.get(child.url + "/metrics") as r:
                text = await r.text()
            found = re.search(rf"(?m)^{name}(?:{{[^}}]*}})? (\S+)$", text)
            return float(found.group(1)) if found else 0.0

        running = asyncio.create_task(ask("running"))
        await eventually(lambda: metric("chatlane_messages_in_total"))  # taken first
        queued = [asyncio.create_task(ask(f"queued {i}")) for i in range(3)]
        # Three waiting behind a turn: the first turn is running (it takes 3 s).
        await eventually(lambda: _equals(metric("chatlane_queue_depth"), 3))
        child.proc.send_signal(signal.SIGINT)  # stop: let running turns finish (up to 60 s)
        await eventually(lambda: STOPPING in child.stderr())  # the first Ctrl-C was taken
        child.proc.send_signal(signal.SIGINT)  # no: stop now
        async with asyncio.timeout(20):
            await asyncio.gather(running, *queued)
            code = await child.proc.wait()
    log = child.stderr()
    print(f"\nsecond Ctrl-C: outcomes {sorted(outcomes)}, exit {code}")
    assert code == 0, log
    assert 0 not in [status for status, _ in outcomes], outcomes  # every client got a response
    # Queued messages were never started: 503 "send it again" (nothing stored); the running one
    # was cut off and is in memory as interrupted: a 502 that says so.
    assert sorted(outcomes) == [(502, "agent_failed")] + [(503, "shutting_down")] * 3, outcomes
    assert "stopping now" in log and "Traceback" not in log


NOT_SLACK = {
    "json-string": (b'"maintenance"', "application/json"),
    "json-array": (b"[1, 2]", "application/json"),
    "html-page": (b"<html>502 Bad Gateway</html>", "text/html"),
    "plain-text": (b"plain text", "application/json"),
}


async def test_slack_startup_against_a_non_json_auth_test_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Before: a 61-line traceback (`'str' object has no attribute 'get'` inside slack_sdk)."""
    for name, (payload, content_type) in NOT_SLACK.items():

        async def answer(
            request: web.Request, payload: bytes = payload, ct: str = content_type
        ) -> web.Response:
            return web.Response(body=payload, content_type=ct)

        app = web.Application()
        app.router.add_route("*", "/api/{method}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            config = tmp_path / name / "chatlane.toml"
            config.parent.mkdir()
            config.write_text(
                f'[store]\npath = "{tmp_path / name / "state"}"\n[http]\nenabled = false\n'
                f'[slack]\nenabled = true\napi_base_url = "http://127.0.0.1:{port}/api/"\n',
                encoding="utf-8",
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bots",
                "run",
                "--config",
                str(config),
                cwd=ROOT,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"},
            )
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await runner.cleanup()
        errors = [line for line in err.decode().splitlines() if " ERROR " in line]
        assert proc.returncode == 1, (name, err)
        assert "Traceback" not in err.decode(), (name, err)
        assert len(errors) == 1 and "auth.test" in errors[0], (name, errors)
