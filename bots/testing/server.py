"""Serve a fake platform's aiohttp app on a free loopback port."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve_on_loopback(app: web.Application, **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Start `app` on 127.0.0.1 with an OS-assigned port; returns the runner and the port."""
    runner = web.AppRunner(app, **{"access_log": None, **runner_options})
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port: int = runner.addresses[0][1]
    return runner, port
