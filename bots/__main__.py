"""`chatlane` / `python -m bots`: run, chat, sessions, check."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bots import eventloop
from bots.launcher import load_config
from core.config import ConfigError, Loaded
from core.keys import validate_key
from core.logs import setup_logging
from core.responders import FutureResponder
from core.types import StoreError

if TYPE_CHECKING:
    from bots.runtime import Runtime

DEFAULT_CONFIG = Path("chatlane.toml")
EXIT_USAGE = 2
SHOW_RECORDS = 10_000


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _load(path: str | None) -> Loaded:
    if path is None:
        if not DEFAULT_CONFIG.exists():
            raise ConfigError(
                DEFAULT_CONFIG,
                "",
                "no config file here; pass --config FILE "
                "(e.g. --config config.example.toml) or copy config.example.toml to chatlane.toml",
            )
        path = str(DEFAULT_CONFIG)
    return load_config(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatlane", description=__doc__)
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", help="TOML config file (default ./chatlane.toml)")
        return sp

    with_config(sub.add_parser("run", help="run every enabled bot until Ctrl-C / SIGTERM"))
    chat = with_config(sub.add_parser("chat", help="talk to the agent in this terminal"))
    chat.add_argument("--user", default=None, help="your user name in the session key")
    with_config(sub.add_parser("check", help="validate the config and say what would start"))
    sessions = sub.add_parser("sessions", help="inspect and reset stored sessions")
    ssub = sessions.add_subparsers(dest="action", required=True)
    ls = with_config(ssub.add_parser("list", help="one row per session key"))
    ls.add_argument("--json", action="store_true")
    show = with_config(ssub.add_parser("show", help="a session's entry and transcript"))
    show.add_argument("key")
    show.add_argument("--json", action="store_true")
    reset = with_config(ssub.add_parser("reset", help="start a new session for KEY"))
    reset.add_argument("key")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        loaded = _load(args.config)
    except ConfigError as exc:
        print(f"chatlane: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    quiet = args.command in ("sessions", "chat") and args.log_level == "INFO"
    setup_logging("WARNING" if quiet else args.log_level, loaded.secrets.values())
    if args.command != "sessions" or not getattr(args, "json", False):
        print(f"chatlane: using config {loaded.path}", file=sys.stderr)
    try:
        return eventloop.run(_dispatch(args, loaded))
    except KeyboardInterrupt:
        return 130
    except StoreError as exc:  # e.g. an unusable state directory: a sentence, not a traceback
        print(f"chatlane: {exc}", file=sys.stderr)
        return 1


async def _dispatch(args: argparse.Namespace, loaded: Loaded) -> int:
    from bots import launcher
    from bots.runtime import Runtime

    if args.command == "run":
        return await launcher.run(loaded)
    if args.command == "check":
        return _check(loaded)
    runtime = Runtime.build(loaded)
    try:
        if args.command == "chat":
            from bots.console import ConsoleSettings, chat

            return await chat(runtime, args.user or loaded.section(ConsoleSettings).user)
        return await _sessions(args, runtime)
    finally:
        await runtime.close()


def _check(loaded: Loaded) -> int:
    from bots.launcher import plan

    c = loaded.config
    print(f"config OK: {loaded.path}")
    print(f"agent: id={c.agent.id} backend={c.agent.backend}")
    if c.store.backend == "redis":
        from core.store.redis import safe_url

        where = safe_url(c.store.url)
    else:
        where = str(loaded.state_dir)
    print(f"store: {c.store.backend} at {where}")
    for adapter, enabled, why in plan(loaded):
        print(f"{adapter.settings.section}: {'would start' if enabled else 'disabled'} ({why})")
    return 0


async def _sessions(args: argparse.Namespace, runtime: Runtime) -> int:
    store = runtime.store
    if args.action == "list":
        listing = await store.list()
        rows = sorted(listing.entries, key=lambda e: e.last_interaction_at, reverse=True)
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "key": e.key,
                            "sessionId": e.session_id,
                            "turns": e.turns,
                            "createdAt": _iso(e.created_at),
                            "lastInteractionAt": _iso(e.last_interaction_at),
                        }
                        for e in rows
                    ],
                    indent=2,
                )
            )
        else:
            print(f"{'KEY':<60} {'SESSION':<32} {'TURNS':>5}  {'CREATED':<25} LAST")
            for e in rows:
                print(
                    f"{e.key:<60} {e.session_id:<32} {e.turns:>5}  "
                    f"{_iso(e.created_at):<25} {_iso(e.last_interaction_at)}"
                )
            print(f"{len(rows)} sessions")
        for d in listing.damaged:
            print(f"damaged: {d.key or '(key unknown)'} at {d.where}: {d.reason}", file=sys.stderr)
        return 0
    try:
        key = validate_key(args.key)
    except ValueError as exc:
        print(f"chatlane: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "reset":
        responder = FutureResponder()
        await runtime.gateway.reset(key, responder)
        reply = await responder.reply
        if reply.kind != "notice":
            print(f"chatlane: {key}: {reply.text}", file=sys.stderr)
            return 1
        print(f"{key}: new session {reply.session_id}")
        return 0
    found = await store.get(key)
    if found is None:
        print(f"chatlane: no session for {key}", file=sys.stderr)
        return 1
    entry = found
    records = await store.tail(entry.session_id, SHOW_RECORDS)
    if args.json:
        print(
            json.dumps(
                {
                    "key": entry.key,
                    "sessionId": entry.session_id,
                    "platform": entry.platform,
                    "turns": entry.turns,
                    "createdAt": _iso(entry.created_at),
                    "sessionStartedAt": _iso(entry.session_started_at),
                    "lastInteractionAt": _iso(entry.last_interaction_at),
                    "transcript": [
                        {
                            "role": r.role,
                            "content": r.content,
                            "at": _iso(r.at),
                            "interrupted": r.interrupted,
                        }
                        for r in records
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    print(f"key:        {entry.key}\nsession:    {entry.session_id}\nturns:      {entry.turns}")
    print(f"created:    {_iso(entry.created_at)}\nlast:       {_iso(entry.last_interaction_at)}")
    for r in records:
        mark = " (interrupted)" if r.interrupted else ""
        print(f"--- {r.role} {_iso(r.at)}{mark}\n{r.content}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
