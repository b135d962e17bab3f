"""An approval asked by one chatlane process and clicked on ANOTHER (two processes, one
real redis-server, Slack in HTTP mode): the turn on the first process continues."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from bots.testing import RedisServer, eventually, unique_prefix
from bots.testing.fake_llm import FakeLLM, tool_then_answer
from bots.testing.fake_slack import (
    FakeSlack,
    block_actions,
    buttons,
    event_callback,
    form_body,
    signed_headers,
)
from core.turn import approval_action
from tests.faults.test_replicas import SECRET, post_event, replicas, signed, slack_config, store_section
from tests.support.slack import mention
from tests.support.tools import SERVER, counted


async def test_a_click_on_the_other_replica_continues_the_turn(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    calls = tmp_path / "calls"
    fake = await FakeSlack().start()
    try:
        async with FakeLLM(reply=tool_then_answer("delete_file", lambda t: {"path": t.split()[-1]})) as llm:
            agent = (
                f'[agent]\nbackend = "openai"\n[agent.openai]\nbase_url = "{llm.base_url}"\nmax_retries = 0\n'
                f'[[agent.mcp]]\nname = "test"\ncommand = {json.dumps(SERVER)}\n'
                f'env = {{ CALLS_FILE = "{calls}" }}\napproval = ["delete_file"]\n'
            )
            config = slack_config(
                tmp_path, fake, store_section(tmp_path, redis_server, unique_prefix()), agent
            )
            async with replicas([config, config], tmp_path) as (a, b), aiohttp.ClientSession() as http:
                raw, headers = signed(event_callback(mention("delete g.txt")))
                assert await post_event(http, a.events_url, raw, headers) == 200
                [question] = await eventually(lambda: [m for m in fake.messages if buttons(m)], timeout=30)
                click = next(x for x in buttons(question) if x.startswith(approval_action("approved", "")))
                form = form_body({"payload": json.dumps(block_actions(question, click))})
                form_headers = signed_headers(SECRET, form, content_type="application/x-www-form-urlencoded")
                assert await post_event(http, b.events_url, form, form_headers) == 200  # the OTHER process
                await eventually(lambda: any("deleted g.txt" in s for s in fake.shown()), timeout=30)
                asked_log, clicked_log = a.process.stderr(), b.process.stderr()
    finally:
        await fake.close()
    assert counted(calls) == ["delete_file"]
    assert "delete_file on" in asked_log and "approved by" in asked_log  # the turn ran on the first
    assert "delete_file on" not in clicked_log
    assert "approved" in question.text
