"""Crash safety: SIGKILL a real `chatlane run` at random moments of a same-key burst."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import aiohttp
import pytest

from bots.testing import ChatlaneProcess, run_cli, write_config
from tests.faults.harness import inspect_state
from tests.support.http import COMPLETIONS, body

KILLS = 30
CLIENTS = 6
KEY = "agent:main:http:burst:api"


async def _burst(
    http: aiohttp.ClientSession, url: str, round_: int, client: int, received: list[tuple[str, str]]
) -> None:
    """Send messages one after another until the server dies; keep every reply received."""
    for i in range(10_000):
        text = f"r{round_} c{client} m{i}"
        try:
            async with http.post(url + COMPLETIONS, json=body(text, user="burst")) as resp:
                if resp.status != 200:
                    raise AssertionError(f"{text}: HTTP {resp.status}: {await resp.text()}")
                data = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            return  # killed mid-request: this message was never acknowledged
        received.append((text, data["choices"][0]["message"]["content"]))


@pytest.mark.slow
async def test_sigkill_during_same_key_bursts_keeps_every_acknowledged_reply_and_one_session(
    tmp_path: Path,
) -> None:
    """30 kill -9s at random moments while 6 clients talk in one conversation: every
    entry parses, every reply a client received is in the transcript (user message and
    answer), and the key still has exactly one session. Torn transcript lines (a
    record cut by the kill) are tolerated and reported."""
    config = write_config(tmp_path, "[agent]\necho_delay_ms = 3\n")
    log = tmp_path / "stderr.log"
    log.touch()
    rng = random.Random(20261124)
    received: list[tuple[str, str]] = []
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for round_ in range(KILLS):
            child = await ChatlaneProcess.start(config, log)
            async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
                for c in range(CLIENTS):
                    tg.create_task(_burst(http, child.url, round_, c, received))
                await asyncio.sleep(rng.uniform(0.02, 0.35))
                await child.kill()
    state = inspect_state(tmp_path / "state")
    print(
        f"\ncrash: {KILLS} kills survived, {len(received)} replies received, "
        f"{state.bad_lines} torn transcript lines skipped"
    )
    assert len(received) > KILLS, "the bursts never got going"
    assert state.damaged == []
    assert list(state.entries) == [KEY], "exactly one session for the key"
    sid = state.entries[KEY]
    assert set(state.transcripts) == {sid}, "no second session was ever minted"
    records = state.transcripts[sid]
    users = {m.content for m in records if m.role == "user"}
    answers = {m.content for m in records if m.role == "assistant"}
    lost = [text for text, answer in received if text not in users or answer not in answers]
    assert lost == [], f"{len(lost)} acknowledged replies are not in the transcript"
    assert all(f"of session {sid[:8]}" in answer for _, answer in received)
    assert state.bad_lines <= KILLS, "at most one torn line per kill"
    assert state.stray == []

    listed = await asyncio.to_thread(run_cli, "sessions", "list", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert [row["key"] for row in json.loads(listed.stdout)] == [KEY]
