"""`chatlane send` and `chatlane schedules list | run`.

The CLI is not the running bot: it cannot post to Discord or Slack itself. `send` and
`schedules run` save a one-shot schedule in the store (`Proactive.remind`), which the
scheduler of whichever running chatlane process claims it first fires, once; the
command waits up to `--wait` seconds for its outcome. With no process running, the
message waits in the store (and is sent at start, within its catch-up hour).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from core.door import Unreachable, target_for
from core.model import FireMark
from core.ops import next_slot

if TYPE_CHECKING:
    from bots.runtime import Runtime

EXIT_USAGE = 2
EXIT_NOT_YET = 3
POLL_S = 0.2


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    send = sub.add_parser("send", parents=[common], help="speak first in a conversation (KEY TEXT)")
    send.add_argument("key", help="the conversation's session key, e.g. agent:main:slack:*:C0123")
    send.add_argument("text")
    send.add_argument("--mode", choices=["prompt", "notice"], default="prompt")
    send.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the outcome")
    schedules = sub.add_parser("schedules", help="list [[schedules]] or fire one now")
    actions = schedules.add_subparsers(dest="action", required=True)
    actions.add_parser("list", parents=[common], help="next fire, last fire and its outcome")
    run = actions.add_parser("run", parents=[common], help="fire a schedule now, once")
    run.add_argument("name")
    run.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the outcome")


def _when(t: float | None) -> str:
    if t is None or t <= 0:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def run(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.command == "send":
        try:
            target_for(args.key)
        except (Unreachable, ValueError) as exc:
            print(f"chatlane: cannot send to {args.key!r}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        name = f"send-{uuid.uuid4().hex[:12]}"
        return await _fire_once(runtime, name, args.key, args.text, args.mode, args.wait)
    if args.action == "list":
        return await _list(runtime)
    config = {s.name: s for s in runtime.loaded.config.schedules}
    schedule = config.get(args.name)
    if schedule is None:
        known = ", ".join(config) or "none configured"
        print(f"chatlane: no schedule {args.name!r} ({known})", file=sys.stderr)
        return EXIT_USAGE
    name = f"{schedule.name}.run-{uuid.uuid4().hex[:8]}"
    return await _fire_once(runtime, name, schedule.key, schedule.text, schedule.mode, args.wait)


async def _fire_once(runtime: Runtime, name: str, key: str, text: str, mode: str, wait: float) -> int:
    proactive = runtime.gateway.proactive
    await proactive.remind(
        key, text, datetime.now(UTC), mode="notice" if mode == "notice" else "prompt", name=name
    )
    print(f"queued as {name}", file=sys.stderr)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        mark = await runtime.store.fire_mark(name)
        if mark is not None and mark.fire:
            print(f"{name}: {mark.outcome}")
            return 0 if mark.outcome == "answered" else 1
        await asyncio.sleep(POLL_S)
    print(
        f"{name}: not fired within {wait:g}s: is chatlane running? It is kept in the store and "
        "fired by the first process that starts within an hour.",
        file=sys.stderr,
    )
    return EXIT_NOT_YET


async def _list(runtime: Runtime) -> int:
    scheduler = runtime.gateway.proactive.scheduler
    schedules = await scheduler.all_schedules()
    if not schedules:
        print("no schedules")
        return 0
    now = time.time()
    print(f"{'NAME':24} {'WHEN':28} {'NEXT FIRE':24} {'LAST FIRE':24} OUTCOME")
    for s in schedules:
        mark: FireMark | None = await runtime.store.fire_mark(s.name)
        when = s.cron or (f"every {s.every}" if s.every else f"at {s.at}")
        last = mark.due if mark is not None and mark.fire else None
        outcome = mark.outcome if mark is not None and mark.fire else "-"
        upcoming = next_slot(s, max(now, mark.due if mark is not None else now))
        print(f"{s.name:24} {when:28} {_when(upcoming):24} {_when(last):24} {outcome}")
    return 0
