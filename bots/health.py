"""`[metrics]`: health and metrics for an operator, on a listener of its own.

    GET /livez     200 {"status": "ok"} while the event loop runs (it answers: it runs)
    GET /readyz    200 when every started bot is connected and the store answers a read;
                   503 otherwise, with a JSON body naming what is not ready
    GET /healthz   the same as /livez (what older probes asked)
    GET /metrics   Prometheus text; with `metrics.token_env` set, only with
                   `Authorization: Bearer <scrape token>`

It runs whatever bots are enabled (a Discord- or Slack-only bot has it too), starts before
them (so /readyz says "connecting" while they connect) and stops after them. The scrape
token is its own secret: it opens /metrics and nothing else (no conversation is ever
readable with it), and it is required when the listener is not on loopback.

A bot says whether it is ready through an optional `async ready() -> str | None` (None:
ready; else why not, e.g. "not connected"); a bot without one is ready once started.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Sequence
from typing import Annotated, ClassVar

from aiohttp import web
from pydantic import Field

from bots.http.service import is_loopback
from bots.runtime import Runtime, Service, StartupError
from core.config import AdapterSettings, SecretNeed
from core.model import SessionKey

log = logging.getLogger("chatlane.health")

STORE_PROBE_KEY = SessionKey("agent:main:ops:readiness:probe")
"""A key no conversation has: reading it asks the store to answer, and changes nothing."""
NOT_STARTED = "not started"


class MetricsSettings(AdapterSettings):
    """`[metrics]`: the health and metrics listener."""

    section: ClassVar[str] = "metrics"
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464
    token_env: str = "CHATLANE_METRICS_TOKEN"
    """Names the environment variable holding the scrape token for /metrics (required
    when `host` is not loopback). Not the HTTP API's token: it reads no conversation."""
    store_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    """/readyz counts the store as unreachable when a read takes longer than this."""

    def secret_needs(self) -> tuple[SecretNeed, ...]:
        return (SecretNeed("token_env", required=False),) if self.enabled else ()


def refusal(settings: MetricsSettings, token_set: bool) -> str | None:
    """Why the listener must not start with these settings (`chatlane check` asks too)."""
    if not settings.enabled or token_set or is_loopback(settings.host):
        return None
    return (
        f"metrics: refusing to serve /metrics on {settings.host!r} without a scrape token: set the "
        f'environment variable {settings.token_env} (metrics.token_env), or use host = "127.0.0.1"'
    )


class HealthService:
    """The `[metrics]` listener; `port` is the bound port once started."""

    name = "metrics"

    def __init__(self, runtime: Runtime, bots: Sequence[Service] = ()) -> None:
        self.runtime = runtime
        self.settings = runtime.loaded.section(MetricsSettings)
        token = runtime.loaded.secrets.get(self.settings.token_env)
        self._token = f"Bearer {token.get_secret_value()}".encode() if token else None
        self.bots = list(bots)
        self.started: set[str] = set()
        """Names of the bots that finished starting (the launcher says so)."""
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/healthz", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        s = self.settings
        if (why := refusal(s, self._token is not None)) is not None:
            raise StartupError(why)
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"metrics: cannot listen on {s.host}:{s.port}: {exc.strerror or exc}") from exc
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def describe(self) -> str:
        auth = "scrape token required for /metrics" if self._token else "no scrape token"
        return f"/livez /readyz /metrics on http://{self.settings.host}:{self.port} ({auth})"

    async def problems(self) -> dict[str, str]:
        """What is not ready, by part (`store`, each bot's name); empty when all are."""
        found: dict[str, str] = {}
        for bot in self.bots:
            if bot.name not in self.started:
                found[bot.name] = NOT_STARTED
                continue
            check = getattr(bot, "ready", None)
            if check is not None and (why := await check()) is not None:
                found[bot.name] = str(why)
        try:
            async with asyncio.timeout(self.settings.store_timeout_s):
                await self.runtime.store.get(STORE_PROBE_KEY)
        except TimeoutError:
            found["store"] = f"no answer within {self.settings.store_timeout_s:g}s"
        except Exception as exc:  # any failure of the probe read: not reachable
            found["store"] = f"unreachable: {type(exc).__name__}"
        return found

    async def _livez(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = await self.problems()
        parts = {b.name: problems.get(b.name, "ok") for b in self.bots}
        parts["store"] = problems.get("store", "ok")
        status = "ok" if not problems else "not ready"
        return web.json_response({"status": status, "parts": parts}, status=200 if not problems else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._token is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, self._token):
                log.info("metrics: refused a scrape without the right token from %s", request.remote)
                return web.json_response(
                    {"error": "missing or wrong scrape token (Authorization: Bearer <token>)"}, status=401
                )
        return web.Response(
            body=self.runtime.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )
