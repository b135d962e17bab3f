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

The site accepts connections itself rather than through `loop.create_server`: asyncio
accepts up to `backlog` connections in one go before any of them runs, so a burst over
the cap would hold one descriptor per refused connection until the next loop turn (and
hit EMFILE, logged once per connection by asyncio). Here a refused connection gets its
503 and is closed at once, inside the accept loop, and accept() failing for want of
descriptors pauses accepting briefly instead of spinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bots.http import wire
from bots.http.errors import RETRY_AFTER_S, ApiError
from core.ops import TaskSet

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


BUSY_RESPONSE = _busy_response()
ACCEPT_BURST = 64
"""Connections accepted per readiness event before other work runs."""
ACCEPT_PAUSE_S = 0.1
"""How long to stop accepting when accept() fails for want of descriptors."""


REFUSE_DRAIN_READS = 4
"""Reads of what a refused client already sent (64 KiB each) before its 503."""


def _discard_received(conn: socket.socket) -> None:
    """Read away the bytes a client sent before we accepted it. Closing a socket with unread
    bytes sends a reset instead of a FIN, and a reset makes the client's TCP stack drop the
    503 it has not read yet: under a burst the client sees "connection reset", no reason."""
    conn.setblocking(False)
    for _ in range(REFUSE_DRAIN_READS):
        try:
            if not conn.recv(65536):
                return
        except OSError:  # nothing more queued (EAGAIN), or the client is gone already
            return


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

    def full(self) -> bool:
        return len(self._live) + self._pending >= self.max_connections

    def refuse(self, conn: socket.socket) -> None:
        """503 and close, now: the descriptor is free again before the next accept."""
        self.shed += 1
        _discard_received(conn)
        with contextlib.suppress(OSError):
            conn.send(BUSY_RESPONSE)  # a fresh socket's buffer takes it whole, or we don't care
            # The FIN goes out now, behind the 503: bytes that arrive between here and close()
            # still make a reset, but the client has read its end of stream by then.
            conn.shutdown(socket.SHUT_WR)
        conn.close()

    async def admit(self, conn: socket.socket) -> None:
        """Hand an accepted connection to aiohttp (counted as pending until it is made)."""
        assert self._server is not None
        server = self._server
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            await loop.connect_accepted_socket(lambda: _Guarded(self, server(), loop.time()), sock=conn)
        except OSError:
            conn.close()
        finally:
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
    """A TCP site whose connections go through a `ConnectionGuard` (its own accept loop)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner)
        self._host, self._port, self._guard = host, port, guard
        self._sock: socket.socket | None = None
        self._admitting = TaskSet("http accept")
        self._paused = False
        self.accept_failures = 0
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.bound_port}"

    async def start(self) -> None:
        await super().start()
        assert self._runner.server is not None
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.bound_port = sock.getsockname()[1]
        self._guard.start(self._runner.server)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        assert self._sock is not None
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE/ENFILE/ENOBUFS: stop accepting for a moment
                self.accept_failures += 1
                if self.accept_failures == 1 or self.accept_failures % 1000 == 0:
                    log.error(
                        "http: cannot accept connections: %s (%d times)", exc.strerror, self.accept_failures
                    )
                self._pause()
                return
            if self._guard.full():
                self._guard.refuse(conn)
                continue
            conn.setblocking(False)
            self._admitting.spawn(self._guard.admit(conn), name="http admit")

    def _pause(self) -> None:
        if self._paused or self._sock is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._sock.fileno())
        self._paused = True

        def resume() -> None:
            self._paused = False
            if self._sock is not None:
                loop.add_reader(self._sock.fileno(), self._accept)

        loop.call_later(ACCEPT_PAUSE_S, resume)

    async def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        await self._admitting.close()
        await super().stop()
        await self._guard.stop()
