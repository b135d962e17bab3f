"""`chatlane` / `python -m bots`: run, chat, sessions, check, send, schedules."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bots import eventloop
from bots.launcher import load_config
from core.config import ConfigError, Loaded, plural
from core.model import StoreError
from core.ops import announce, setup_logging

DEFAULT_CONFIG = Path("chatlane.toml")
EXIT_USAGE = 2
LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def _version() -> str:
    try:
        return version("chatlane")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


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
    from bots import admin, schedules_cli

    p = argparse.ArgumentParser(prog="chatlane", description=__doc__)
    p.add_argument("--version", action="version", version=f"chatlane {_version()}")
    # Logging options work before the subcommand and after it: `chatlane run --log-level DEBUG`.
    p.add_argument("--log-level", default=None, choices=LOG_LEVELS)
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    # --config too: `chatlane --config X check` and `chatlane check --config X` both work
    # (SUPPRESS below: a subcommand's default must not overwrite the value given before it).
    p.add_argument("--config", "-c", default=None, help="TOML config file (default ./chatlane.toml)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", default=argparse.SUPPRESS, help="TOML config file (default ./chatlane.toml)"
    )
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS)
    common.add_argument("--log-format", default=argparse.SUPPRESS, choices=["text", "json"])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common], help="run every enabled bot until Ctrl-C / SIGTERM")
    chat = sub.add_parser("chat", parents=[common], help="talk to the agent in this terminal")
    chat.add_argument("--user", default=None, help="your user name in the session key")
    sub.add_parser("check", parents=[common], help="validate the config and say what would start")
    sessions = sub.add_parser("sessions", help="inspect, reset and prune stored sessions")
    admin.add_parsers(sessions.add_subparsers(dest="action", required=True), common)
    schedules_cli.add_parsers(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        loaded = _load(args.config)
    except ConfigError as exc:
        announce(f"config error: {exc}", args.log_format, level="ERROR", problems=exc.problems)
        return EXIT_USAGE
    level = args.log_level
    if level is None:  # the commands that print their own output stay quiet by default
        level = "WARNING" if args.command in ("sessions", "chat", "check", "send", "schedules") else "INFO"
    setup_logging(level, loaded.secrets.values(), args.log_format)
    if args.command != "sessions" or not getattr(args, "json", False):
        announce(f"using config {loaded.path}", args.log_format, config=str(loaded.path))
    try:
        if args.command == "chat" and sys.stdin.isatty():
            from bots.console import ConsoleSettings
            from bots.terminal import interactive

            return interactive(loaded, args.user or loaded.section(ConsoleSettings).user)
        return eventloop.run(_dispatch(args, loaded))
    except ConfigError as exc:  # e.g. a plugin agent whose factory cannot be imported
        print(f"chatlane: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except StoreError as exc:  # e.g. an unusable state directory: a sentence, not a traceback
        print(f"chatlane: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `chatlane sessions list | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush does not fail again
        return 0


async def _dispatch(args: argparse.Namespace, loaded: Loaded) -> int:
    from bots import admin, launcher
    from bots.runtime import Runtime

    if args.command == "run":
        return await launcher.run(loaded)
    if args.command == "check":
        return await _check(loaded)
    runtime = Runtime.build(loaded)
    try:
        if args.command == "chat":
            from bots.console import ConsoleSettings, chat

            return await chat(runtime, args.user or loaded.section(ConsoleSettings).user)
        if args.command in ("send", "schedules"):
            from bots import schedules_cli

            return await schedules_cli.run(args, runtime)
        return await admin.run(args, runtime)
    finally:
        await runtime.close()


async def _check(loaded: Loaded) -> int:
    from bots.launcher import plan
    from bots.preflight import inspect

    c = loaded.config
    findings = inspect(loaded)
    errors = [f for f in findings if f.level == "error"]
    for f in findings:
        print(f"{f.level}: {f.text}", file=sys.stderr)
    if errors:
        count = plural(len(errors), "problem")
        print(f"config NOT OK: {loaded.path}: `chatlane run` would refuse to start ({count})")
        return 1
    agents = await _check_agents(loaded)
    print(f"config OK: {loaded.path}")
    print("\n".join(agents))
    if c.store.backend == "redis":
        from core.store import safe_url

        where = safe_url(c.store.url)
    else:
        where = str(loaded.state_dir)
    print(f"store: {c.store.backend} at {where}")
    for adapter, enabled, why in plan(loaded):
        print(f"{adapter.settings.section}: {'would start' if enabled else 'disabled'} ({why})")
    print("not checked (needs a connection): ports in use, tokens the platforms reject, Redis reachable")
    return 0


async def _check_agents(loaded: Loaded) -> list[str]:
    """Make every agent once (so a plugin that cannot be made fails here, naming its key);
    the lines describing the agents and the routing table. Rules that never match are
    warned about on stderr."""
    from core.agents import make_agents
    from core.conversation import Router

    agents = make_agents(loaded)  # ConfigError names the key
    for agent in agents.values():
        await agent.close()
    router = Router(loaded.config)
    lines = []
    for agent_id, settings in router.agents.items():
        extra = f" factory={settings.factory}" if settings.factory else ""
        models = f" models={','.join(settings.models)}" if settings.models else ""
        compact = (
            f" compact_after_tokens={settings.compact_after_tokens}" if settings.compact_after_tokens else ""
        )
        default = " (default)" if agent_id == router.default else ""
        lines.append(f"agent: {agent_id} backend={settings.backend}{extra}{models}{compact}{default}")
    lines.append("routing (first match wins):")
    for route in router.table():
        lines.append(f"  {route.rule} -> {route.agent}")
        if route.warning:
            print(f"chatlane: warning: binding {route.rule}: {route.warning}", file=sys.stderr)
    return lines


if __name__ == "__main__":
    sys.exit(main())
