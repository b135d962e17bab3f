"""An OpenAI-compatible HTTP API in front of the gateway (aiohttp).

    POST /v1/chat/completions   JSON, or SSE with `"stream": true`
    GET  /v1/models             the configured agents, one model each
    POST /v1/conversations/{key}/messages   speak first in a conversation (conversations.py)
    GET  /healthz               liveness, never needs the token
    GET  /metrics               Prometheus text

The request's `model` chooses the agent (an agent id, as listed by /v1/models); without
one, `[[bindings]]` and the default agent decide. Memory lives on the server: only the
LAST user message of `messages` is the new input, the rest of the request's history is
ignored and the session's transcript is used instead. Which session: the
`X-Session-Key` header (a full `http` key of one of the agents, interpreted under
`session.scope`; another platform's key is a 403), else the body's `user`
(`agent:<agent>:http:<user>:api`), else a fresh session for this request alone. Every
answer names its key in the `X-Session-Key` response header, so a client can go on in
that session.

The turn is owned by the lanes, not by the request: a client that disconnects mid-turn
cancels only its wait; the turn completes and is stored. Rejected requests (token,
size, JSON, key) are refused before anything reaches the gateway, so they never create
a session. An agent failure is a 502 OpenAI-style error with `x-should-retry: false`:
the user's message is already in memory, so an automatic retry would say it twice.

Streaming (`"stream": true`) always ends: with a finish chunk and `data: [DONE]` for an
answer, a merged answer (collect/interrupt) or a notice (`/new`); with an error event,
a finish chunk and `[DONE]` when the turn fails after streaming began. A request refused
before its first byte (queue full, shutting down, agent failed at once) gets the HTTP
status instead (429/503/502), which the `openai` client turns into its own exceptions.
In `queue.mode = "interrupt"` a running turn can be cancelled by the next message and its
partial answer is never the answer, so streamed requests get their answer in one piece
once their turn is complete: a streaming client never sees a cut-off answer as final.

A request without a session (no `X-Session-Key`, no `user`) is a one-off: its session is
deleted from the store once it is answered.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import json
import logging
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from bots.http import conversations, wire
from bots.http import request as parsing
from bots.http.console import Console
from bots.http.errors import ApiError, RefusalLog, openai_errors, shutting_down
from bots.http.guard import ConnectionGuard, GuardedSite, derive_max_connections
from bots.http.idempotency import Idempotency, OwnerResponder, caller_of
from bots.http.settings import HttpSettings
from bots.readiness import API_AT
from bots.runtime import Runtime, StartupError
from core.door import SLOW_DOWN_TEXT
from core.model import (
    AgentEvent,
    ApprovalWaiting,
    CancelReason,
    Closed,
    Decision,
    Inbound,
    Reply,
    SessionKey,
    parse_key,
)
from core.ops import TaskSet
from core.turn import STOPPED_MARK, QuietResponder, ToolStatus

log = logging.getLogger("chatlane.http")

SESSION_HEADER = "X-Session-Key"
APPROVE_HEADER = "X-Chatlane-Approve"
"""Tools the caller approves ahead (comma-separated names, or "*"); any other tool that
needs approval is refused over HTTP (there is nobody to ask), and the model is told so."""
PLATFORM = "http"
CHANNEL = "api"
STATELESS_PREFIX = "anon-"
RETRY_TEXT = "\n\n[Cut off; answering again from the start:]\n\n"
"""Streamed when a turn is cancelled to be answered again (its commit was fenced out)."""
SUPERSEDED_TEXT = "\n\n[The text above was cut off; the answer, together with later messages:]\n\n"
"""Streamed before an answer that replaces what was streamed (should a mode ever allow it)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def refusal(host: str, token_set: bool, token_env: str) -> str | None:
    """Why the API must not start with these settings (`chatlane check` asks this too)."""
    if token_set or is_loopback(host):
        return None
    return (
        f"http: refusing to listen on {host!r} without a token: set the environment "
        f'variable {token_env} (http.token_env), or use host = "127.0.0.1"'
    )


class _Events(QuietResponder):
    """A request's view of its turn: streamed pieces (when `live`), then the one reply.

    With an `Idempotency-Key`, `owner` stores the reply (for retries) before it is handed on.
    """

    def __init__(
        self, stream: bool, live: bool, owner: OwnerResponder | None = None, approved: str = ""
    ) -> None:
        self.live, self.owner = live, owner
        self.approved = {t.strip() for t in approved.split(",") if t.strip()}
        self.status = ToolStatus()
        # Only a stream reads the queue: a plain request awaits `reply`, and an
        # asyncio.Queue is 3.3 KB held by each of thousands of requests waiting on a model.
        self._queue: asyncio.Queue[str | Reply | AgentEvent] | None = asyncio.Queue() if stream else None
        self.reply: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

    def _put(self, item: str | Reply | AgentEvent) -> None:
        if self._queue is not None:
            self._queue.put_nowait(item)

    async def next(self) -> str | Reply | AgentEvent:
        """A stream's next piece, event or (last) its reply."""
        if self._queue is None:
            raise RuntimeError("not a stream: await `reply`")
        return await self._queue.get()

    async def send(self, reply: Reply) -> None:
        if self.owner is not None:
            await self.owner.send(reply)
        if not self.reply.done():
            self.reply.set_result(reply)
            self._put(reply)

    async def on_delta(self, text: str) -> None:
        if self.live and not self.reply.done():
            self._put(text)

    async def on_event(self, event: AgentEvent) -> None:
        if self.live and not self.reply.done():
            self._put(event)

    async def ask_approval(self, waiting: ApprovalWaiting) -> Decision:
        return "approved" if {"*", waiting.tool} & self.approved else "denied"

    async def on_cancelled(self, reason: CancelReason) -> None:
        # A fenced turn is answered again from the start: what was streamed of it must
        # read as cut off. (Stopped and shut-down turns say so in the reply that follows.)
        if self.live and reason == "retry" and not self.reply.done():
            self._put(RETRY_TEXT)


T = TypeVar("T")


class HttpService:
    """The `[http]` bot. `port` is the bound port once started (config `port = 0`: any free one)."""

    name = "http"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.loaded.section(HttpSettings)
        self.agent_id = runtime.gateway.router.default
        """The default agent: what `/healthz` names and keys without a `model` use."""
        token = runtime.loaded.secrets.get(self.settings.token_env)
        self._token = f"Bearer {token.get_secret_value()}".encode() if token else None
        self.console = (
            Console(runtime, token.get_secret_value() if token else None) if self.settings.console else None
        )
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)
        self._instance = uuid.uuid4().hex[:12]  # ids unique across processes without a urandom call each
        self._tasks = TaskSet("http")
        self._stopping = asyncio.Event()
        self._waiting: set[asyncio.Future[Any]] = set()
        """What handlers wait for (a reply, a first piece); `stop` cancels each (a 503)."""
        self.refusals = RefusalLog()
        """One access-log line per refused request, rate-limited."""
        self.guard = ConnectionGuard(
            max_connections=self.settings.max_connections or derive_max_connections(),
            header_timeout_s=self.settings.header_timeout_s,
        )
        self.host = self.settings.host
        self.port = 0
        self._once = Idempotency(
            runtime.gateway.requests,
            self.settings.idempotency_wait_s,
            tasks=self._tasks,
            completion=lambda ident, text, model: json.loads(wire.completion(ident, model, text)),
            chunk=_chunk_of_delta,
            reply_error=_reply_error,
        )

    @property
    def base_url(self) -> str:
        """The API root for OpenAI clients, e.g. `http://127.0.0.1:8765/v1`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes,
            middlewares=[self.refusals.middleware, openai_errors, self.guard.middleware],
        )
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_post(
            conversations.ROUTE, conversations.handler(self.runtime.gateway, self._authorize, self._body)
        )
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        if self.console is not None:
            self.console.add_routes(app)
        return app

    async def start(self) -> None:
        s = self.settings
        if (why := refusal(s.host, self._token is not None, s.token_env)) is not None:
            raise StartupError(why)
        # handler_cancellation: a vanished client frees its handler at once; its turn
        # lives on in the lanes regardless.
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=5.0)
        await runner.setup()
        site = GuardedSite(runner, s.host, s.port, self.guard)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"http: cannot listen on {s.host}:{s.port}: {exc.strerror or exc}") from exc
        self._runner = runner
        self.port = site.bound_port
        if self.console is not None:
            self.console.start()
        self.runtime.gateway.targets.register(PLATFORM, self._once.responder)

    async def stop(self) -> None:
        if self.console is not None:
            self.console.stop()
        self._stopping.set()
        for waiting in list(self._waiting):
            waiting.cancel()
        self.runtime.gateway.targets.unregister(PLATFORM)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._tasks.close(timeout=5.0)

    async def ready(self) -> str | None:
        """For /readyz: None while listening."""
        return None if self._runner is not None else "not listening"

    def describe(self) -> str:
        auth = "Bearer token required" if self._token else "no token"
        return f"{API_AT} {self.base_url} ({auth}; up to {self.guard.max_connections} connections)" + (
            f"; operator console at http://{self.host}:{self.port}/console" if self.console else ""
        )

    # ------------------------------------------------------------------ handlers
    def _authorize(self, request: web.Request) -> None:
        if self._token is None:
            return
        # aiohttp keeps undecodable header bytes as surrogates: encode them back, don't fail.
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._token):
            raise ApiError(
                401, "missing or wrong bearer token (Authorization: Bearer <token>)", code="invalid_api_key"
            )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        """One chat completion: one message submitted to the gateway.

        Not gated by core/access.py: the API has no platform allowlists, mentions or
        DMs to judge; the bearer token (`_authorize`) is its access rule.
        """
        self._authorize(request)
        body = await self._body(request)
        chat = parsing.parse(body)
        n = next(self._ids)
        inbound = self._inbound(request, chat, f"http-{self._instance}-{n}")
        try:
            key = self.runtime.gateway.key_for(inbound)
            model = parse_key(key).agent
        except ValueError as exc:  # the ids make no valid session key
            raise ApiError(400, str(exc), code="invalid_session_key") from None
        ident = f"chatcmpl-{self._instance}-{n}"
        if self.runtime.gateway.lanes.closing:  # draining: a client retries elsewhere or later
            return shutting_down().response()
        once = await self._once.begin(request, body, chat.stream, key, ident)  # Idempotency-Key
        if isinstance(once, web.StreamResponse):  # a retry's stored answer, or an error
            return once
        owner = once if isinstance(once, OwnerResponder) else None
        # Pieces are queued only for a stream that shows them: a plain request reads its one
        # reply, and a queue nobody reads would hold a whole answer's pieces per request.
        live = chat.stream and self.runtime.loaded.config.queue.mode != "interrupt"
        events = _Events(chat.stream, live, owner, request.headers.get(APPROVE_HEADER, ""))
        try:
            await self.runtime.gateway.submit(inbound, events, target=owner.target if owner else None)
        except Closed:
            if owner is not None:  # frees its Idempotency-Key for a retry
                await owner.send(Reply("", "shutdown", key))
            return shutting_down().response()
        if chat.user is None and request.headers.get(SESSION_HEADER) is None:
            # Owned, not tied to this handler: a client that leaves must not leave its session behind.
            self._tasks.spawn(self._forget_after(key, events.reply), name=f"forget {key}")
        if not chat.stream:
            reply = await self._until_stopping(events.reply)
            if owner is not None and (stored := owner.response()) is not None:
                return stored  # byte for byte what its retries get
            if (problem := _reply_error(reply)) is not None:
                return _keyed(problem.response(), key)
            return web.Response(
                body=wire.completion(ident, model, reply.text, reply.usage),
                content_type="application/json",
                headers={SESSION_HEADER: key},
            )
        first = await self._until_stopping(events.next())
        if isinstance(first, Reply) and (problem := _reply_error(first)) is not None:
            return _keyed(problem.response(), key)  # nothing streamed yet: a real status
        return await self._stream(request, events, first, ident, key, usage=chat.include_usage)

    async def _until_stopping(self, waiting: Awaitable[T]) -> T:
        """`waiting`, or a 503 + Retry-After once the service stops first: a request kept
        in the durable inbox is answered after the restart, to its `Idempotency-Key` retry."""
        # No task and no asyncio.wait per request: `stop` cancels what is in `_waiting`
        # (thousands of requests may wait on a slow model; each would hold ~2 KB more).
        got = asyncio.ensure_future(waiting)
        if self._stopping.is_set():
            got.cancel()
            raise shutting_down()
        self._waiting.add(got)
        try:
            return await got
        except asyncio.CancelledError:
            handler = asyncio.current_task()
            if got.cancelled() and self._stopping.is_set() and (handler is None or not handler.cancelling()):
                raise shutting_down() from None
            raise
        finally:
            self._waiting.discard(got)

    async def _stream(
        self,
        request: web.Request,
        events: _Events,
        first: str | Reply | AgentEvent,
        ident: str,
        key: SessionKey,
        *,
        usage: bool = False,
    ) -> web.StreamResponse:
        """SSE from the first piece on; ends with a finish chunk (`usage`: then a chunk with
        the answer's usage) and [DONE], whatever the reply."""
        resp = web.StreamResponse(headers={**wire.SSE_HEADERS, SESSION_HEADER: key})
        model = parse_key(key).agent
        try:
            await resp.prepare(request)
            streamed = False
            event = first
            while not isinstance(event, Reply):
                if isinstance(event, str):
                    await resp.write(wire.chunk(ident, model, event, first=not streamed))
                    streamed = True
                elif (line := events.status.line(event)) is not None:
                    await resp.write(wire.comment(line))
                event = await events.next()
            reply = event
            if (problem := _reply_error(reply)) is not None:  # failed after it began: too late for a status
                await resp.write(wire.error_event(problem.body()))
            elif not streamed:  # answered in one piece (notice, merged, interrupt mode)
                await resp.write(wire.chunk(ident, model, reply.text, first=True))
            elif reply.kind == "stopped":  # `/stop` cut it short: say so at its end
                await resp.write(wire.chunk(ident, model, f"\n\n{STOPPED_MARK}"))
            elif reply.kind != "answer":  # what was streamed is not this reply's answer
                await resp.write(wire.chunk(ident, model, SUPERSEDED_TEXT + reply.text))
            await resp.write(wire.chunk(ident, model, finish=True))
            if usage:
                await resp.write(wire.usage_chunk(ident, model, reply.usage))
            await resp.write(wire.DONE)
            await resp.write_eof()
        except ConnectionResetError:  # the client left; the turn goes on without it
            log.debug("client of %s left mid-stream", key)
        return resp

    async def _forget_after(self, key: SessionKey, reply: asyncio.Future[Reply]) -> None:
        await reply
        await self.runtime.gateway.forget(key)

    async def _body(self, request: web.Request) -> object:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"request body is over {limit} bytes (http.max_body_bytes)", code="too_large")
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(
                413, f"request body is over {limit} bytes (http.max_body_bytes)", code="too_large"
            ) from None
        except TimeoutError:
            raise ApiError(
                408,
                f"request body not received within {self.settings.body_timeout_s:g}s (http.body_timeout_s)",
                code="timeout",
            ) from None
        return parsing.decode(raw)

    def _agent_asked(self, model: str | None) -> str | None:
        """The agent the body's `model` names (None: none named); 404 for an unknown one."""
        if not model:
            return None
        agents = self.runtime.gateway.agent_ids()
        if model not in agents:
            raise ApiError(
                404,
                f"no model {model!r}: the models here are the agents {', '.join(agents)} (GET /v1/models)",
                code="model_not_found",
            )
        return model

    def _inbound(self, request: web.Request, chat: parsing.ChatRequest, message_id: str) -> Inbound:
        header = request.headers.get(SESSION_HEADER)
        asked = self._agent_asked(chat.model)
        if header is not None:
            try:
                parts = parse_key(header.strip())
            except ValueError as exc:
                raise ApiError(400, f"{SESSION_HEADER}: {exc}", code="invalid_session_key") from None
            agents = self.runtime.gateway.agent_ids()
            if parts.agent not in agents:
                raise ApiError(
                    400,
                    f"{SESSION_HEADER}: the key belongs to agent {parts.agent!r}; "
                    f"this server serves the agents {', '.join(agents)}",
                    code="invalid_session_key",
                )
            if asked is not None and asked != parts.agent:
                raise ApiError(
                    400,
                    f"{SESSION_HEADER} belongs to agent {parts.agent!r} but 'model' asks for {asked!r}",
                    code="model_mismatch",
                )
            if parts.platform != PLATFORM:
                # Another platform's conversation is guarded by that platform's allowlists
                # and DM policy; an API token must not be a way around them.
                raise ApiError(
                    403,
                    f"{SESSION_HEADER}: only keys of the {PLATFORM!r} platform can be used here "
                    f"(agent:{self.agent_id}:{PLATFORM}:<user>:<channel>); a {parts.platform!r} "
                    "conversation belongs to that platform",
                    "permission_error",
                    "foreign_platform_key",
                )
            return Inbound(
                PLATFORM,
                parts.user,
                parts.channel,
                chat.text,
                message_id,
                parts.thread,
                True,
                True,
                agent=parts.agent,
                attachments=chat.files,
            )
        user = chat.user
        sender = ""
        if user is None:
            user = f"{STATELESS_PREFIX}{uuid.uuid4().hex}"  # stateless: a session of its own, deleted after
            sender = caller_of(request)  # [limits] count anonymous requests per API token
        # Under scope "channel" the user part is dropped: keep HTTP users apart anyway.
        channel = user if self.runtime.loaded.config.session.scope == "channel" else CHANNEL
        return Inbound(
            PLATFORM,
            user,
            channel,
            chat.text,
            message_id,
            None,
            True,
            True,
            user,
            agent=asked,
            sender=sender,
            attachments=chat.files,
        )

    async def _models(self, request: web.Request) -> web.Response:
        self._authorize(request)
        agents = self.runtime.gateway.agent_ids()
        return web.Response(body=wire.model_list(agents), content_type="application/json")

    async def _model(self, request: web.Request) -> web.Response:
        self._authorize(request)
        model = request.match_info["model"]
        if model not in self.runtime.gateway.agent_ids():
            raise ApiError(404, f"no model {model!r}", code="model_not_found")
        return web.Response(body=wire.model(model), content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "agent": self.agent_id})

    async def _metrics(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.Response(
            body=self.runtime.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )


def _keyed(response: web.Response, key: SessionKey) -> web.Response:
    """An error answer that still names the request's session (a failed turn's message is
    in that session's memory: the client goes on there)."""
    response.headers[SESSION_HEADER] = key
    return response


def _reply_error(reply: Reply) -> ApiError | None:
    """None for a reply to return as content; the error to answer with otherwise."""
    if reply.kind in ("answer", "merged", "notice", "stopped"):  # stopped: `/stop` cut it short
        return None
    if reply.kind == "limited":  # every refused request needs an answer, not only the first
        return ApiError(429, reply.text or SLOW_DOWN_TEXT, "rate_limit_error", "rate_limited")
    if reply.kind == "dropped":
        return ApiError(429, reply.text, "rate_limit_error", "queue_full")
    if reply.kind == "shutdown":  # nothing stored: safe to retry
        return shutting_down()
    return ApiError(502, reply.text, "server_error", "agent_failed")


def _chunk_of_delta(ident: str, model: str, delta: dict[str, str], finish: str | None) -> bytes:
    """`wire.chunk` in the shape bots/http/idempotency.py replays stored answers with."""
    return wire.chunk(ident, model, delta.get("content"), first="role" in delta, finish=finish is not None)


def create(runtime: Runtime) -> HttpService:
    return HttpService(runtime)
