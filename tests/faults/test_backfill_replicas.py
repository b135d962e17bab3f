"""Two real chatlane processes on one state folder get the same first Slack mention in a
thread (a duplicated delivery on two replicas): the thread is read once, not twice."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp

from bots.testing.fake_slack import GENERAL, FakeSlack, event_callback, post, signed_headers
from core.testing import ChatlaneProcess, write_config
from tests.support.slack import SECRET, mention

EVENTS_URL = re.compile(r"Events API on (http://127\.0\.0\.1:\d+/slack/events)")
ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": SECRET}


async def events_url(process: ChatlaneProcess) -> str:
    async with asyncio.timeout(10):
        while (m := EVENTS_URL.search(process.stderr())) is None:
            await asyncio.sleep(0.02)
    return m.group(1)


async def test_two_processes_racing_on_the_first_mention_read_the_thread_once(tmp_path: Path) -> None:
    fake = await FakeSlack().start()
    processes: list[ChatlaneProcess] = []
    try:
        slack = (
            f'[slack]\nenabled = true\nmode = "http"\napi_base_url = "{fake.api_base}"\nport = 0\n'
            "[agent]\necho_delay_ms = 300\n"  # both turns overlap unless the turn lock orders them
        )
        state = tmp_path / "state"
        for name in ("a", "b"):
            config = write_config(tmp_path / name, slack, state=state)
            processes.append(await ChatlaneProcess.start(config, tmp_path / f"{name}.log", env=ENV))
        urls = [await events_url(p) for p in processes]
        root, *_ = fake.seed(GENERAL, ["thread start", "one", "two", "three", "four"])
        for m in fake.channel_history[GENERAL][1:]:
            m["thread_ts"] = root["ts"]
        event = fake.remember(mention("what's the plan?", thread_ts=root["ts"]))
        payload = json.dumps(event_callback(event))
        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(
                *(post(http, url, payload, signed_headers(SECRET, payload)) for url in urls)
            )
        assert [s for s, _ in statuses] == [200, 200]
        replies = await fake.wait_for_posts(2, timeout=20)
        texts = sorted(str(r.args["text"]) for r in replies)
        reads = fake.calls_of("conversations.replies")
        print(f"conversations.replies calls: {len(reads)}; replies: {texts}")
        assert len(reads) == 1
        assert sum("read 5 earlier messages of the thread" in t for t in texts) == 1
        assert sorted(int(re.search(r"turn (\d+)", t).group(1)) for t in texts) == [1, 2]  # type: ignore[union-attr]
    finally:
        for p in processes:
            await p.terminate()
        await fake.close()
