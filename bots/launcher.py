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
        agents = ", ".join(f"{a} ({s.backend})" for a, s in loaded.config.agent_table().items())
        log.info("chatlane is up: agents %s, store %s; Ctrl-C stops", agents, loaded.config.store.backend)
        await stop.wait()
        log.info(
            "stopping: finishing in-flight turns (up to %ss)",
            loaded.config.queue.shutdown_timeout_s,
        )
        return 0
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runtime.gateway.close()
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("%s did not stop cleanly", service.name)
        await runtime.close()
        log.info("stopped")
