"""Build everything from one config and run the enabled bots together.

Adapters are a registry, not a chain of `if discord: ... if slack: ...`: each module
named here has `create(runtime) -> Service`, and the launcher starts those whose
`[section] enabled = true`. Shutdown: stop the adapters taking new messages, let
in-flight turns finish (`queue.shutdown_timeout_s`), then close the agent and store.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable

from bots.preflight import inspect
from bots.runtime import Runtime, Service, StartupError
from core.config import Loaded

log = logging.getLogger("chatlane.launcher")

ADAPTERS: dict[str, str] = {
    "http": "bots.http.service",
    "discord": "bots.discord.service",
    "slack": "bots.slack.service",
    "console": "bots.console",
}
"""Config section -> module with `create(runtime) -> Service`, in start order."""


def plan(loaded: Loaded) -> list[tuple[str, bool, str]]:
    """(section, enabled, why) for every adapter."""
    rows = []
    for name in ADAPTERS:
        section = getattr(loaded.config, name)
        if section.enabled:
            rows.append((name, True, f"[{name}] enabled = true"))
        else:
            rows.append((name, False, f"[{name}] enabled = false in {loaded.path.name}"))
    return rows


def create_services(runtime: Runtime) -> list[Service]:
    services: list[Service] = []
    for name, enabled, _ in plan(runtime.loaded):
        if enabled:
            module = importlib.import_module(ADAPTERS[name])
            factory: Callable[[Runtime], Service] = module.create
            services.append(factory(runtime))
    return services


async def run(loaded: Loaded, *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or `stop`); the process exit code."""
    findings = inspect(loaded)  # the very checks `chatlane check` makes
    for finding in findings:
        (log.error if finding.level == "error" else log.warning)("%s", finding.text)
    if any(f.level == "error" for f in findings):
        return 1
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runtime = Runtime.build(loaded)
    started: list[Service] = []
    try:
        for name, enabled, why in plan(loaded):
            if not enabled:
                log.info("%s: disabled (%s)", name, why)
        services = create_services(runtime)
        if not services:
            log.error("nothing to run: every bot is disabled in %s", loaded.path)
            return 2
        for service in services:
            await service.start()
            started.append(service)
            log.info("%s: running (%s)", service.name, service.describe())
        log.info(
            "chatlane is up: agent %r (%s), store %s; Ctrl-C stops",
            loaded.config.agent.id,
            loaded.config.agent.backend,
            loaded.config.store.backend,
        )
        await stop.wait()
        log.info(
            "stopping: finishing in-flight turns (up to %ss; Ctrl-C again to stop them now)",
            loaded.config.queue.shutdown_timeout_s,
        )
        return 0
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    finally:
        await _close_gateway(runtime, loop)
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("%s did not stop cleanly", service.name)
        await runtime.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("stopped")


async def _close_gateway(runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
    """Let running turns finish; a second Ctrl-C / SIGTERM cancels them at once instead.

    Either way every waiting sender is still answered (the adapters are stopped only
    after this): a cut-off or queued message gets its "send it again" reply, which the
    HTTP API sends as a 503, rather than a dropped connection.
    """
    hurry = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, hurry.set)
    closing = asyncio.ensure_future(runtime.gateway.close())
    hurried = asyncio.ensure_future(hurry.wait())
    try:
        await asyncio.wait({closing, hurried}, return_when=asyncio.FIRST_COMPLETED)
        if not closing.done():
            log.warning("stopping now: cancelling the turns still running; their senders are told")
            await runtime.gateway.close(timeout=0)
        await closing
    finally:
        hurried.cancel()
