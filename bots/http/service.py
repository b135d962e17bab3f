"""An OpenAI-compatible HTTP API in front of the gateway (aiohttp).

    POST /v1/chat/completions   JSON, or SSE with `"stream": true`
    GET  /v1/models             the configured agents, one model each
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
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import itertools
import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from bots.http.content import ContentError, read_content
from bots.http.idempotency import Idempotency, OwnerResponder, caller_of
from bots.http.settings import HttpSettings
from bots.runtime import Runtime, StartupError
from core.keys import parse_key
from core.limits import SLOW_DOWN_TEXT
from core.responders import FutureResponder
from core.streaming import STOPPED_MARK
from core.types import Closed, FileSource, Inbound, Reply

log = logging.getLogger("chatlane.http")

SESSION_HEADER = "X-Session-Key"
PLATFORM = "http"
CHANNEL = "api"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"


class ApiError(Exception):
    """A request refused with an OpenAI-style error object."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", code: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code

    def response(self) -> web.Response:
        body = {
            "error": {"message": self.message, "type": self.kind, "param": None, "code": self.code or None}
        }
        headers = {"x-should-retry": "false"} if self.status == 502 else None
        return _json(body, self.status, headers)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(obj).encode(), status=status, content_type="application/json", headers=headers
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


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
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)
        self._instance = uuid.uuid4().hex[:12]  # ids unique across processes without a urandom call each
        self.host = self.settings.host
        self.port = 0
        self._once = Idempotency(
            runtime.gateway.requests,
            self.settings.idempotency_wait_s,
            completion=self._completion,
            chunk=self._chunk,
            reply_error=_reply_error,
        )

    @property
    def base_url(self) -> str:
        """The API root for OpenAI clients, e.g. `http://127.0.0.1:8765/v1`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        s = self.settings
        if self._token is None and not is_loopback(s.host):
            raise StartupError(
                f"http: refusing to listen on {s.host!r} without a token: set the environment "
                f'variable {s.token_env} (http.token_env), or use host = "127.0.0.1"'
            )
        # handler_cancellation: a vanished client frees its handler at once; its turn
        # lives on in the lanes regardless.
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=5.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, s.host, s.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"http: cannot listen on {s.host}:{s.port}: {exc.strerror or exc}") from exc
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def describe(self) -> str:
        auth = "Bearer token required" if self._token else "no token"
        return f"OpenAI-compatible API at {self.base_url} ({auth})"

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
        try:
            self._authorize(request)
            body = await self._body(request)
            text, files, stream = _parse(body)
            n = next(self._ids)
            inbound = self._inbound(request, body, text, f"http-{self._instance}-{n}")
            inbound = dataclasses.replace(inbound, attachments=files)
            key = self.runtime.gateway.key_for(inbound)
            model = parse_key(key).agent
        except ApiError as err:
            return err.response()
        except ValueError as exc:  # the ids make no valid session key
            return ApiError(400, str(exc), code="invalid_session_key").response()
        ident = f"chatcmpl-{self._instance}-{n}"
        once = await self._once.begin(request, body, stream, key, ident)  # Idempotency-Key
        if isinstance(once, web.StreamResponse):  # a retry's stored answer, or an error
            return once
        responder = once or FutureResponder()
        deltas = responder.stream() if stream else None
        try:
            await self.runtime.gateway.submit(inbound, responder)
        except Closed:
            if isinstance(responder, OwnerResponder):  # frees its Idempotency-Key for a retry
                await responder.send(Reply("", "shutdown", key))
            return _shutting_down().response()
        if deltas is None:
            reply = await responder.reply
            if isinstance(responder, OwnerResponder) and (stored := responder.response()) is not None:
                return stored  # byte for byte what its retries get
            if (problem := _reply_error(reply)) is not None:
                return problem.response()
            return _json(self._completion(ident, reply.text, model), headers={SESSION_HEADER: key})
        first = await deltas.get()
        whole = first is None  # answered without streaming (notice, merged, failure...)
        if first is None:
            reply = responder.reply.result()
            if (problem := _reply_error(reply)) is not None:
                return problem.response()
            first = reply.text
        resp = web.StreamResponse(headers={**_SSE_HEADERS, SESSION_HEADER: key})
        try:
            await resp.prepare(request)
            await resp.write(self._chunk(ident, model, {"role": "assistant", "content": first}))
            while not whole and (piece := await deltas.get()) is not None:
                await resp.write(self._chunk(ident, model, {"content": piece}))
            reply = responder.reply.result()
            if (problem := _reply_error(reply)) is not None:  # failed after it began: too late for a status
                error = {"message": problem.message, "type": problem.kind, "code": problem.code}
                await resp.write(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
            else:
                if reply.kind == "stopped":  # `/stop` cut it short: say so at its end
                    await resp.write(self._chunk(ident, model, {"content": f"\n\n{STOPPED_MARK}"}))
                await resp.write(self._chunk(ident, model, {}, "stop"))
            await resp.write(_DONE)
            await resp.write_eof()
        except ConnectionResetError:  # the client left; the turn goes on without it
            log.debug("client of %s left mid-stream", key)
        return resp

    async def _body(self, request: web.Request) -> Any:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, f"request body is over {limit} bytes (http.max_body_bytes)", code="too_large")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(
                413, f"request body is over {limit} bytes (http.max_body_bytes)", code="too_large"
            ) from None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None

    def _agent_asked(self, body: dict[str, Any]) -> str | None:
        """The agent the body's `model` names (None: none named); 404 for an unknown one."""
        model = body.get("model")
        if not model:
            return None
        agents = self.runtime.gateway.agent_ids()
        if model not in agents:
            raise ApiError(
                404,
                f"no model {model!r}: the models here are the agents {', '.join(agents)} (GET /v1/models)",
                code="model_not_found",
            )
        return str(model)

    def _inbound(self, request: web.Request, body: dict[str, Any], text: str, message_id: str) -> Inbound:
        header = request.headers.get(SESSION_HEADER)
        asked = self._agent_asked(body)
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
                text,
                message_id,
                parts.thread,
                True,
                True,
                agent=parts.agent,
            )
        user = body.get("user")
        sender = ""
        if user is None or user == "":
            user = f"anon-{uuid.uuid4().hex}"  # stateless: a session of its own
            sender = caller_of(request)  # [limits] count anonymous requests per API token
        elif not isinstance(user, str):
            raise ApiError(400, "'user' must be a string", code="invalid_type")
        # Under scope "channel" the user part is dropped: keep HTTP users apart anyway.
        channel = user if self.runtime.loaded.config.session.scope == "channel" else CHANNEL
        return Inbound(
            PLATFORM, user, channel, text, message_id, None, True, True, user, agent=asked, sender=sender
        )

    def _completion(self, ident: str, text: str, model: str) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
        }

    def _chunk(self, ident: str, model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    @staticmethod
    def _model_object(agent_id: str) -> dict[str, Any]:
        return {"id": agent_id, "object": "model", "created": 0, "owned_by": "chatlane"}

    async def _models(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except ApiError as err:
            return err.response()
        agents = self.runtime.gateway.agent_ids()
        return _json({"object": "list", "data": [self._model_object(a) for a in agents]})

    async def _model(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except ApiError as err:
            return err.response()
        model = request.match_info["model"]
        if model not in self.runtime.gateway.agent_ids():
            return ApiError(404, f"no model {model!r}", code="model_not_found").response()
        return _json(self._model_object(model))

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "agent": self.agent_id})

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
        except ApiError as err:
            return err.response()
        return web.Response(
            body=self.runtime.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )


def _parse(body: Any) -> tuple[str, tuple[FileSource, ...], bool]:
    """The new input (the last user message's text and files) and whether to stream; ApiError if malformed."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_type")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array", code="invalid_type")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", code="invalid_type")
    if not isinstance(body.get("model", ""), str):
        raise ApiError(400, "'model' must be a string", code="invalid_type")
    for m in reversed(messages):
        if not isinstance(m, dict):
            raise ApiError(
                400, "each message must be an object with 'role' and 'content'", code="invalid_type"
            )
        if m.get("role") == "user":
            try:
                text, files = read_content(m.get("content"))
            except ContentError as exc:
                raise ApiError(400, str(exc), code=exc.code) from None
            if not text.strip() and not files:
                raise ApiError(400, "the last user message is empty", code="empty_message")
            return text, files, stream
    raise ApiError(400, "'messages' has no message with role 'user'", code="no_user_message")


def _shutting_down() -> ApiError:
    return ApiError(
        503, "the server is shutting down; send it again in a minute", "server_error", "shutting_down"
    )


def _reply_error(reply: Reply) -> ApiError | None:
    """None for a reply to return as content; the error to answer with otherwise."""
    if reply.kind in ("answer", "merged", "notice", "stopped"):  # stopped: `/stop` cut it short
        return None
    if reply.kind == "limited":  # every refused request needs an answer, not only the first
        return ApiError(429, reply.text or SLOW_DOWN_TEXT, "rate_limit_error", "rate_limited")
    if reply.kind == "dropped":
        return ApiError(429, reply.text, "rate_limit_error", "queue_full")
    if reply.kind == "shutdown":  # nothing stored: safe to retry
        return _shutting_down()
    return ApiError(502, reply.text, "server_error", "agent_failed")


def create(runtime: Runtime) -> HttpService:
    return HttpService(runtime)
