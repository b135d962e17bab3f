"""kill -9 after an approved tool ran and before the answer: after a restart the answer is
finished (the durable inbox resumes the turn) and the tool ran exactly once (the turn's
stored tool outcome is reused; the test MCP server counts its calls)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from bots.testing import ChatlaneProcess, eventually, write_config
from bots.testing.fake_llm import FakeLLM, tool_then_answer
from tests.faults.test_inbox_restart import user_records
from tests.support.http import COMPLETIONS, body
from tests.support.tools import SERVER, counted

APPROVE = {"X-Chatlane-Approve": "delete_file"}


async def _post(http: aiohttp.ClientSession, url: str, text: str, key: str) -> tuple[int, dict[str, Any]]:
    try:
        async with http.post(
            url + COMPLETIONS,
            json=body(text, "alice"),
            headers={"Idempotency-Key": key, **APPROVE},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            return resp.status, await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError):
        return 0, {}


async def test_kill_9_after_the_tool_ran_finishes_the_answer_without_running_it_again(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t.split()[-1]})) as llm:
        # The model takes "forever" once it has the tool's result: the kill lands there.
        llm.delay_for = lambda messages: 60.0 if messages[-1].get("role") == "tool" else 0.0
        toml = (
            "idempotency_wait_s = 1\n"
            f'[agent]\nbackend = "openai"\n[agent.openai]\nbase_url = "{llm.base_url}"\nmax_retries = 0\n'
            f'[[agent.mcp]]\nname = "test"\ncommand = {json.dumps(SERVER)}\n'
            f'env = {{ CALLS_FILE = "{calls}" }}\napproval = ["delete_file"]\n'
        )
        config = write_config(tmp_path, toml)
        log = tmp_path / "run.log"
        async with aiohttp.ClientSession() as http:
            first = await ChatlaneProcess.start(config, log)
            try:
                request = asyncio.ensure_future(_post(http, first.url, "delete h.txt", "k-1"))
                await eventually(lambda: len(llm.calls) == 2, timeout=30)  # the tool ran, its result sent
                assert counted(calls) == ["delete_file"]
                await first.kill()
                assert (await request)[0] == 0
            finally:
                await first.stop()
            llm.delay_for = None
            async with await ChatlaneProcess.start(config, log) as second:
                end, text = time.monotonic() + 30, ""
                while time.monotonic() < end and not text:
                    status, got = await _post(http, second.url, "delete h.txt", "k-1")
                    text = str(got["choices"][0]["message"]["content"]) if status == 200 else ""
                    await asyncio.sleep(0.05)
    assert "deleted h.txt" in text
    assert counted(calls) == ["delete_file"]  # exactly once, across the crash
    assert user_records(tmp_path / "state") == ["delete h.txt"]
