"""Two real chatlane processes on one state folder each get a first mention in the same
thread at the same moment: the thread is read once, not twice."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp

from bots.testing import ChatlaneProcess, write_config
from bots.testing.fake_slack import GENERAL, FakeSlack, event_callback, post, signed_headers
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
            'stream = "off"\n'  # the answers are counted as posts
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
        # Two different messages (the same one twice would be deduplicated, issue 19).
        events = [fake.remember(mention(text, thread_ts=root["ts"])) for text in ("the plan?", "the date?")]
        payloads = [json.dumps(event_callback(e)) for e in events]
        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(
                *(
                    post(http, url, p, signed_headers(SECRET, p))
                    for url, p in zip(urls, payloads, strict=True)
                )
            )
        assert [s for s, _ in statuses] == [200, 200]
        replies = await fake.wait_for_posts(2, timeout=20)
        texts = sorted(str(r.args["text"]) for r in replies)
        reads = fake.calls_of("conversations.replies")
        print(f"conversations.replies calls: {len(reads)}; replies: {texts}")
        assert len(reads) == 1
        # The first turn reads the thread: its 5 messages, and the other mention if it came first.
        assert sum(bool(re.search(r"read [56] earlier messages of the thread", t)) for t in texts) == 1
        assert sorted(int(re.search(r"turn (\d+)", t).group(1)) for t in texts) == [1, 2]  # type: ignore[union-attr]
    finally:
        for p in processes:
            await p.terminate()
        await fake.close()
