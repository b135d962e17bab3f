"""Build everything from one config and run the enabled bots together.

Adapters are a registry, not a chain of `if discord: ... if slack: ...`: each entry
names the adapter's settings class (its `[section]` and the secrets it needs) and a
module with `create(runtime) -> Service`; the full config schema is core's sections
plus every registered section (`CONFIG`), and the launcher starts the adapters whose
`[section] enabled = true`. Shutdown: stop the adapters taking new messages, let
in-flight turns finish (`queue.drain_s`), then close the agent and store.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bots.console import ConsoleSettings
from bots.discord.settings import DiscordSettings
from bots.health import HealthService, MetricsSettings
from bots.http.settings import HttpSettings
from bots.preflight import inspect
from bots.readiness import STOPPING, UP
from bots.runtime import Runtime, Service, StartupError
from bots.slack.settings import SlackSettings
from core import config
from core.config import AdapterSettings, Config, Loaded

log = logging.getLogger("chatlane.launcher")


@dataclass(frozen=True, slots=True)
class Adapter:
    settings: type[AdapterSettings]
    """Its `[section]` (the class's `section`) and the secrets it needs."""
    module: str
    """Has `create(runtime) -> Service`; imported only when the adapter is enabled."""


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(HttpSettings, "bots.http.service"),
    Adapter(DiscordSettings, "bots.discord.service"),
    Adapter(SlackSettings, "bots.slack.service"),
    Adapter(ConsoleSettings, "bots.console"),
)
"""Every adapter, in start order."""

CONFIG: type[Config] = config.compose([*(a.settings for a in ADAPTERS), MetricsSettings])
"""The full config schema: core's sections, every adapter's, and `[metrics]`."""


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Loaded:
    """`core.config.load_config` with every adapter's section (what the CLI reads)."""
    return config.load_config(path, env, schema=CONFIG)


def plan(loaded: Loaded) -> list[tuple[Adapter, bool, str]]:
    """(adapter, enabled, why) for every adapter."""
    rows = []
    for adapter in ADAPTERS:
        name = adapter.settings.section
        if loaded.section(adapter.settings).enabled:
            rows.append((adapter, True, f"[{name}] enabled = true"))
        else:
            rows.append((adapter, False, f"[{name}] enabled = false in {loaded.path.name}"))
    return rows


def create_services(runtime: Runtime) -> list[Service]:
    services: list[Service] = []
    for adapter, enabled, _ in plan(runtime.loaded):
        if enabled:
            module = importlib.import_module(adapter.module)
            factory: Callable[[Runtime], Service] = module.create
            services.append(factory(runtime))
    runtime.services[:] = services
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
        # Before any adapter takes events: each adapter's platform is resumed from the
        # durable inbox as it registers, before its new messages (core/door/resume.py).
        runtime.gateway.start(await_adapters=True)
        for adapter, enabled, why in plan(loaded):
            if not enabled:
                log.info("%s: disabled (%s)", adapter.settings.section, why)
        for agent in {id(a): a for a in runtime.agents.values()}.values():
            start = getattr(agent, "start", None)  # optional: agents with tools start their servers
            if start is not None:
                await start()
        services = create_services(runtime)
        if not services:
            log.error("nothing to run: every bot is disabled in %s", loaded.path)
            return 2
        health = HealthService(runtime, services) if loaded.section(MetricsSettings).enabled else None
        if health is not None:  # first: /livez and /readyz answer while the bots connect
            await health.start()
            started.append(health)
            log.info("%s: running (%s)", health.name, health.describe())
        for service in services:
            await service.start()
            started.append(service)
            if health is not None:
                health.started.add(service.name)
            log.info("%s: running (%s)", service.name, service.describe())
        runtime.gateway.adapters_started()  # only now is "no adapter here" a fact worth logging
        runtime.gateway.start_schedules()  # once the adapters answer their targets
        agents = ", ".join(f"{a} ({s.backend})" for a, s in loaded.config.agent_table().items())
        log.info("%s: agents %s, store %s; Ctrl-C stops", UP, agents, loaded.config.store.backend)
        await stop.wait()
        log.info(
            "%s (up to %ss; Ctrl-C again to stop them now); "
            "what is left stays in the inbox for the next start",
            STOPPING,
            loaded.config.queue.drain_timeout_s,
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

    The adapters are stopped only after this and keep taking messages meanwhile: the
    gateway stores them in the durable inbox for the next process (chat platforms never
    send them again), and what was cut off or still queued stays there too, so nobody is
    asked to send anything again. The HTTP API answers new requests 503 + Retry-After.
    """
    hurry = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, hurry.set)
    closing = asyncio.ensure_future(runtime.gateway.close())
    hurried = asyncio.ensure_future(hurry.wait())
    try:
        await asyncio.wait({closing, hurried}, return_when=asyncio.FIRST_COMPLETED)
        if not closing.done():
            log.warning("stopping now: cancelling the turns still running; they stay in the inbox")
            await runtime.gateway.close(timeout=0)
        await closing
    finally:
        hurried.cancel()
