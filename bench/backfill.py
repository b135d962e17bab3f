"""The extra latency of a first turn that reads its thread (backfill), against the fake Slack.

In one process: the real Slack adapter (slack-bolt, Socket Mode) with the echo agent and
the files store, against the local fake Slack (tests/fakes/fake_slack.py, loopback). Each
sample is one new conversation: a thread of 30 earlier messages is seeded, a mention in
it is pushed, and the time until the fake receives the answer (`chat.postMessage`) is
taken. Runs alternate between `history_backfill = 20` and `= 0` on the same machine, so
the difference of the medians is what reading the thread costs a first turn: one
`conversations.replies` round trip plus storing 20 more records with the turn.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import Options, scratch
from bench.report import Report
from bots.launcher import load_config
from bots.runtime import Runtime
from bots.slack.service import create

THREAD = 30
LIMIT = 20
ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_APP_TOKEN": "xapp-test"}


async def _first_turns(root: Path, backfill: int, n: int) -> tuple[list[float], int, int]:
    """(latencies in ms, conversations.replies calls, answers that name the backfill)."""
    from tests.fakes.fake_slack import BOT_USER, GENERAL, FakeSlack, event_callback, message_event

    fake = await FakeSlack().start()
    config = root / f"backfill-{backfill}.toml"
    config.write_text(
        f'[store]\npath = "{root / f"state-{backfill}"}"\n[http]\nenabled = false\n'
        f'[slack]\nenabled = true\nmode = "socket"\napi_base_url = "{fake.api_base}"\n'
        f"history_backfill = {backfill}\n",
        encoding="utf-8",
    )
    runtime = Runtime.build(load_config(config, env=ENV))
    service = create(runtime)
    latencies: list[float] = []
    try:
        await service.start()
        await fake.ws_connected.wait()
        for i in range(n):
            top, *_ = fake.seed(GENERAL, [f"conversation {i} starts"])
            fake.seed(GENERAL, [f"message {j}" for j in range(1, THREAD)], thread_ts=top["ts"])
            event = message_event(f"<@{BOT_USER}> summary?", kind="app_mention", thread_ts=top["ts"])
            fake.remember(event)
            t0 = time.perf_counter()
            await fake.push("events_api", event_callback(event))
            await fake.wait_for_posts(i + 1, timeout=30)
            latencies.append((time.perf_counter() - t0) * 1000)
        named = sum(f"read {LIMIT} earlier messages" in str(p.args.get("text")) for p in fake.posts)
        return latencies, len(fake.calls_of("conversations.replies")), named
    finally:
        await runtime.gateway.close(timeout=5)
        await service.stop()
        await runtime.close()
        await fake.close()


async def run(opts: Options) -> Report:
    report = Report("backfill")
    n = 10 if opts.quick else 100
    with_backfill: list[float] = []
    without: list[float] = []
    for r in range(opts.runs):
        with scratch(opts, "backfill") as root:
            got, reads, named = await _first_turns(root, LIMIT, n)
            with_backfill.extend(got)
            report.check(f"run {r + 1}: each first turn read its thread once", reads == n, f"{reads} reads")
            report.check(f"run {r + 1}: each answer saw {LIMIT} earlier messages", named == n, f"{named}")
            got, reads, _ = await _first_turns(root, 0, n)
            without.extend(got)
            report.check(f"run {r + 1}: history_backfill = 0 reads nothing", reads == 0, f"{reads} reads")
    report.metric(f"first turn, backfill {LIMIT} of {THREAD}", "ms", with_backfill)
    report.metric("first turn, backfill off", "ms", without)
    extra = [a - b for a, b in zip(sorted(with_backfill), sorted(without), strict=True)]
    report.metric("extra (quantile by quantile)", "ms", extra)
    report.note(
        f"{opts.runs} runs x {n} new conversations per setting; Slack Socket Mode, echo agent, files "
        "store, fake Slack on loopback (no network latency: a real Slack adds its round trip)"
    )
    return report
