"""Streamed answers on Discord and Slack: time to first visible text and platform calls.

For each platform and stream mode (Discord `edit` / `off`; Slack `native` / `edit` /
`off`, all with the default `stream_edit_interval_s`), the real adapter (discord.py,
slack-bolt) answers against the local fake platform with a model that streams a
60-piece answer 30 ms apart (~1.8 s, ~1,300 characters). Per answer:

* first visible text: from handing the message to the platform's gateway/socket to
  the fake receiving the first call that shows answer text (a post or a stream start);
* complete: to the call that makes the message read the whole answer;
* platform calls: every Web/REST call the bot made for the answer (posts, edits,
  stream appends, typing, reactions, status).

Checks: each answer ends reading exactly the agent's text. The agent comes from
`bots.testing`, as are the fake Discord and Slack servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Options, scratch
from bench.report import Report
from bots.launcher import load_config
from bots.runtime import Runtime

PIECES, GAP_S = 60, 0.03
POSTS = re.compile(r"/channels/\d+/messages")
ROUTE = re.compile(r"^/channels/\d+|/\d+")
SHOWING = {
    "POST /messages",
    "chat.postMessage",
    "chat.startStream",
}


@dataclass(slots=True)
class Answer:
    first_s: float
    complete_s: float
    calls: int
    exact: bool
    by_kind: dict[str, int] = field(default_factory=dict)


async def _settle(runtime: Runtime, taken: Callable[[], int], n: int) -> None:
    async with asyncio.timeout(60):
        # Polled: nothing signals "the gateway is idle", and 5 ms is far below the figures.
        while taken() < n or len(runtime.gateway.lanes):  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def _taken(runtime: Runtime, platform: str) -> Callable[[], int]:
    def value() -> int:
        got = runtime.metrics.registry.get_sample_value("chatlane_messages_in_total", {"platform": platform})
        return int(got or 0)

    return value


@contextlib.asynccontextmanager
async def discord_bot(folder: Path, stream: str) -> AsyncIterator[Callable[[str, int], Any]]:
    from bots.discord.service import create
    from bots.testing import SlowStreamAgent
    from bots.testing.fake_discord import FakeDiscord

    fake = await FakeDiscord().start()
    agent = SlowStreamAgent(PIECES, GAP_S)
    path = folder / f"discord-{stream}.toml"
    path.write_text(
        f'[store]\npath = "{folder / ("discord-" + stream)}"\n[http]\nenabled = false\n'
        '[discord]\nenabled = true\ntoken_env = "BENCH_DISCORD_TOKEN"\n'
        f'api_base_url = "{fake.api_base}"\ngateway_url = "{fake.gateway_url}"\n'
        f'guild_ready_timeout_s = 0.05\nsync_commands = false\nstream = "{stream}"\n',
        encoding="utf-8",
    )
    runtime = Runtime.build(load_config(path, env={"BENCH_DISCORD_TOKEN": fake.token}), agent=agent)
    service = create(runtime)
    await service.start()
    taken = _taken(runtime, "discord")

    async def ask(text: str, turn: int) -> Answer:
        before = len(fake.calls)
        t0 = time.monotonic()
        await fake.send_message(text, mention=True)
        await _settle(runtime, taken, turn)
        calls = fake.calls[before:]
        expected = agent.text_for(turn, text)
        posts = [c for c in calls if c.method == "POST" and POSTS.fullmatch(c.path) and c.status == 200]
        final = [c for c in calls if c.status == 200 and (c.json or {}).get("content") == expected]
        by_kind: dict[str, int] = {}
        for c in calls:
            kind = f"{c.method} {ROUTE.sub('', c.path)}"
            by_kind[kind] = by_kind.get(kind, 0) + 1
        return Answer(
            first_s=posts[0].at - t0 if posts else float("nan"),
            complete_s=(final[-1].at if final else calls[-1].at) - t0,
            calls=len(calls),
            exact=fake.shown_in(fake.channel_id)[-1] == expected,
            by_kind=by_kind,
        )

    try:
        yield ask
    finally:
        await runtime.gateway.close(timeout=5)
        await service.stop()
        await runtime.close()
        await fake.close()


@contextlib.asynccontextmanager
async def slack_bot(folder: Path, stream: str) -> AsyncIterator[Callable[[str, int], Any]]:
    from bots.slack.service import create
    from bots.testing import SlowStreamAgent
    from bots.testing.fake_slack import BOT_USER, GENERAL, FakeSlack, event_callback, message_event

    fake = await FakeSlack().start()
    agent = SlowStreamAgent(PIECES, GAP_S)
    path = folder / f"slack-{stream}.toml"
    path.write_text(
        f'[store]\npath = "{folder / ("slack-" + stream)}"\n[http]\nenabled = false\n'
        f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{fake.api_base}"\nstream = "{stream}"\n',
        encoding="utf-8",
    )
    env = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test"}
    runtime = Runtime.build(load_config(path, env=env), agent=agent)
    service = create(runtime)
    await service.start()
    taken = _taken(runtime, "slack")

    async def ask(text: str, turn: int) -> Answer:
        before = len(fake.calls)
        event = message_event(f"<@{BOT_USER}> {text}", kind="app_mention")
        t0 = time.monotonic()
        await fake.push("events_api", event_callback(event))
        await _settle(runtime, taken, turn)
        calls = fake.calls[before:]
        expected = agent.text_for(1, text)  # each top-level mention is its own thread
        showing = [c for c in calls if c.method in SHOWING and c.error is None]
        by_kind: dict[str, int] = {}
        for c in calls:
            by_kind[c.method] = by_kind.get(c.method, 0) + 1
        return Answer(
            first_s=showing[0].at - t0 if showing else float("nan"),
            complete_s=calls[-1].at - t0,
            calls=len(calls),
            exact=fake.shown(GENERAL)[-1] == expected,
            by_kind=by_kind,
        )

    try:
        yield ask
    finally:
        await runtime.gateway.close(timeout=5)
        await service.stop()
        await runtime.close()
        await fake.close()


async def run(opts: Options) -> Report:
    report = Report("streaming")
    answers = 1 if opts.quick else max(opts.runs, 3)
    setups = [
        ("discord", "edit", discord_bot),
        ("discord", "off", discord_bot),
        ("slack", "native", slack_bot),
        ("slack", "edit", slack_bot),
        ("slack", "off", slack_bot),
    ]
    with scratch(opts, "streaming") as folder:
        for platform, stream, start in setups:
            got: list[Answer] = []
            async with start(folder, stream) as ask:
                for n in range(1, answers + 1):
                    got.append(await ask(f"question {n}", n))
            label = f"{platform} stream={stream}"
            report.metric(f"{label}: first visible text", "s", [a.first_s for a in got])
            report.metric(f"{label}: answer complete", "s", [a.complete_s for a in got])
            report.metric(f"{label}: platform calls per answer", "calls", [float(a.calls) for a in got])
            report.check(f"{label}: every answer reads exactly the agent's text", all(a.exact for a in got))
            kinds = ", ".join(f"{k} x{v}" for k, v in sorted(got[-1].by_kind.items()))
            report.note(f"{label}, calls of the last answer: {kinds}")
    report.note(
        f"{PIECES} pieces {GAP_S * 1000:.0f} ms apart (~{PIECES * GAP_S:.1f} s of streaming), "
        "default stream_edit_interval_s (1.2 s), stream_first_post_s (1 s) and stream_first_chars (24)"
    )
    return report
