"""Connection admission for the HTTP API: a cap, a header deadline, early shedding.

Every open connection costs a file descriptor, and so does every store file, lock and
platform socket a running turn needs. Without a cap, clients that open connections and
never finish their headers (slowloris, or just a crowd) use up the process's open-file
limit, and then a turn already admitted fails to open its transcript ("couldn't save
this conversation") while accept() fails in a tight, logged loop.

So the API keeps descriptors for the rest of the process:
  * at most `max_connections` connections are open (config `http.max_connections`; 0
    derives it from RLIMIT_NOFILE, keeping a quarter, at least 64, for everything else);
    one more is answered `503` + `Retry-After` and closed at once;
  * a connection must deliver a request's complete headers within `header_timeout_s` of
    opening or of its previous response, or it is closed (the body has its own
    deadline, in the request handler);
  * what was shed or timed out is logged as one summary line per interval, never one
    line per connection, so an attack cannot flood the log either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bots.http import wire
from bots.http.errors import RETRY_AFTER_S, ApiError

log = logging.getLogger("chatlane.http")

ApiHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REPORT_EVERY_S = 10.0
BACKLOG = 1024
"""Connections the kernel completes before we accept them (capped by net.core.somaxconn).
aiohttp's 128 overflows under a burst, and a connection the kernel dropped from a full
queue looks open to its client for seconds without ever reaching us."""
MIN_RESERVE_FDS = 64
BUSY_TEXT = "the server has too many open connections; try again in a moment"


def derive_max_connections(soft_limit: int | None = None) -> int:
    """The connection cap for an open-file limit: a quarter (at least 64) kept in reserve."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        soft_limit = 65536
    return max(16, soft_limit - max(MIN_RESERVE_FDS, soft_limit // 4))


def _busy_response() -> bytes:
    err = ApiError(503, BUSY_TEXT, "server_error", "too_many_connections")
    body = wire.error_body(err.body())
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Shed(asyncio.Protocol):
    """A connection over the cap: answered 503 and closed without reading it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_busy_response())
        transport.close()


class _Guarded(asyncio.Protocol):
    """aiohttp's handler for one connection, with the guard's bookkeeping around it."""

    __slots__ = ("guard", "handler", "idle_since")

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler, now: float) -> None:
        self.guard, self.handler = guard, handler
        self.idle_since: float | None = now
        """When the connection last had no request in progress; None while one is handled."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guard._live[self.handler] = self
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard._live.pop(self.handler, None)
        self.handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        self.handler.eof_received()
        return None

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class ConnectionGuard:
    def __init__(self, *, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self._live: dict[RequestHandler, _Guarded] = {}
        self._server: web.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.shed = 0
        self.timed_out = 0
        self._reported = (0, 0)
        self._pending = 0

    @property
    def open_connections(self) -> int:
        return len(self._live)

    def protocol(self) -> asyncio.BaseProtocol:
        """The listening socket's protocol factory."""
        assert self._server is not None
        # Count accepted-but-not-yet-made connections too: asyncio accepts a burst
        # before it runs any connection_made.
        if len(self._live) + self._pending >= self.max_connections:
            self.shed += 1
            return _Shed()
        self._pending += 1
        asyncio.get_running_loop().call_soon(self._made)
        return _Guarded(self, self._server(), asyncio.get_running_loop().time())

    def _made(self) -> None:
        self._pending -= 1

    @web.middleware
    async def middleware(self, request: web.Request, handler: ApiHandler) -> web.StreamResponse:
        """Marks the connection busy while a request is handled (headers are complete)."""
        guarded = self._live.get(request.protocol) if isinstance(request.protocol, RequestHandler) else None
        if guarded is not None:
            guarded.idle_since = None
        try:
            return await handler(request)
        finally:
            if guarded is not None:
                guarded.idle_since = asyncio.get_running_loop().time()

    def start(self, server: web.Server) -> None:
        self._server = server
        self._sweeper = asyncio.create_task(self._sweep(), name="http connection guard")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._report()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        tick = max(0.05, min(1.0, self.header_timeout_s / 4))
        last_report = loop.time()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for guarded in list(self._live.values()):
                if guarded.idle_since is not None and now - guarded.idle_since > self.header_timeout_s:
                    self.timed_out += 1
                    guarded.idle_since = None
                    guarded.handler.force_close()
            if now - last_report >= REPORT_EVERY_S:
                last_report = now
                self._report()

    def _report(self) -> None:
        shed, timed_out = self.shed - self._reported[0], self.timed_out - self._reported[1]
        self._reported = (self.shed, self.timed_out)
        if shed:
            log.warning(
                "http: refused %d connections over the cap of %d (http.max_connections)",
                shed,
                self.max_connections,
            )
        if timed_out:
            log.warning(
                "http: closed %d connections that sent no whole request within %gs (http.header_timeout_s)",
                timed_out,
                self.header_timeout_s,
            )


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a `ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner)
        self._host, self._port, self._guard = host, port, guard
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        assert self._runner.server is not None
        self._guard.start(self._runner.server)
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol, self._host, self._port, backlog=BACKLOG, reuse_address=True
        )
        self.bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await super().stop()
        await self._guard.stop()
