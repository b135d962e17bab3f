"""`Idempotency-Key` for POST /v1/chat/completions: a retried request is answered once.

The first request with a key owns it (atomically, in the store every process shares)
and runs the turn; its answer is stored when the gateway delivers it, even if that
client has gone. A retry with the same key and the same request gets the stored
answer (JSON or, if it asks to stream, the stored answer as one SSE chunk), or waits for
it while the first still runs; it never starts a second turn. Such a request is kept in
the durable inbox with a `ReplyTarget` naming its claim, so when the process that took
it dies or drains, the process that resumes it stores the answer under the claim, and
the client's retry (on a restarted process or another replica) gets it, stored once. The same key with another
body (or another `X-Session-Key`) is a 422. Keys are per API token. When the first
attempt stored nothing (shutdown, queue full, over `[limits]`), the key is released, so
a retry runs. A retry that waited `http.idempotency_wait_s` in vain gets a 409, which
clients (the openai library among them) retry.

The owner's claim is held for the whole window, not as a renewed lease: the request is
kept in the durable inbox, so when its process dies mid-turn the process that resumes
it (a restart, or another replica adopting the dead one's items) answers it under the
same claim, and the retry gets that answer. A lease that lapsed would let the retry
run it a second time beside the resumed one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from core.door import Requests
from core.model import Reply, ReplyTarget, Responder, StoreError
from core.ops import TaskSet
from core.turn import FutureResponder, QuietResponder

log = logging.getLogger("chatlane.http")

HEADER = "Idempotency-Key"
SESSION_HEADER = "X-Session-Key"
MAX_KEY_LENGTH = 255
POLL_FIRST_S = 0.005
POLL_MAX_S = 0.1
PLATFORM = "http"  # the same as bots/http/service.py's
"""The platform of the API's `ReplyTarget`s: a request with an `Idempotency-Key` is kept
in the durable inbox (channel: its session key) and answered after a restart."""
NOTHING_STORED = frozenset({"shutdown", "dropped", "limited"})
"""Reply kinds after which a retry must run again: the first attempt stored nothing."""


class _ApiErrorLike(Protocol):
    status: int
    message: str
    kind: str
    code: str


Completion = Callable[[str, str, str], dict[str, Any]]
"""(id, answer text, model) -> a chat.completion body."""
Chunk = Callable[[str, str, dict[str, str], str | None], bytes]
"""(id, model, delta, finish reason) -> one SSE chunk."""


def _model_of(session_key: str) -> str:
    """The agent (the API's `model`) that answered: the key's agent id."""
    return session_key.split(":")[1]


ReplyError = Callable[[Reply], _ApiErrorLike | None]


def caller_of(request: web.Request) -> str:
    """Who sent a request, without the secret: a digest of its Authorization header."""
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    return "token-" + hashlib.sha256(given).hexdigest()[:32]


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


@dataclass(slots=True)
class Stored:
    """What the owner answered, as every retry gets it."""

    status: int
    body: dict[str, Any]
    text: str
    session_key: str
    ident: str

    def encode(self) -> bytes:
        return json.dumps(
            {
                "status": self.status,
                "body": self.body,
                "text": self.text,
                "key": self.session_key,
                "id": self.ident,
            }
        ).encode()

    def response(self) -> web.Response:
        headers = {SESSION_HEADER: self.session_key}
        if self.status == 502:  # the message is in memory: an automatic retry would say it twice
            headers["x-should-retry"] = "false"
        return web.Response(
            body=json.dumps(self.body).encode(),
            status=self.status,
            content_type="application/json",
            headers=headers,
        )

    @classmethod
    def decode(cls, raw: bytes) -> Stored:
        d = json.loads(raw)
        return cls(int(d["status"]), d["body"], str(d["text"]), str(d["key"]), str(d["id"]))


class OwnerResponder(FutureResponder):
    """The first request's responder: stores the answer before handing it on. `stored`
    is then what every retry gets; the owner answers with exactly that too. The claim
    needs no renewing here: the durable inbox item it names keeps it (see `responder`)."""

    def __init__(
        self,
        store_reply: Callable[[Reply], Awaitable[Stored | None]],
        target: ReplyTarget | None = None,
    ) -> None:
        super().__init__()
        self._store_reply = store_reply
        self.stored: Stored | None = None
        self._kept = False
        self.target = target
        """Where the answer goes for a process that resumes the request from the durable
        inbox: the request's claim, answered into the store (see `Idempotency.responder`)."""

    async def send(self, reply: Reply) -> None:
        # Not `self.reply.done()`: a client that went away cancels that future, and its
        # answer must be stored all the same.
        if not self._kept:
            self._kept = True
            self.stored = await self._store_reply(reply)
        await super().send(reply)

    def response(self) -> web.Response | None:
        """The stored answer as a JSON response (None if nothing was stored)."""
        return None if self.stored is None else self.stored.response()


class ResumedResponder(QuietResponder):
    """A resumed request's responder: no client listens, so only the answer is kept."""

    def __init__(self, keep: Callable[[Reply], Awaitable[Stored | None]]) -> None:
        self._keep = keep
        self._kept = False

    async def send(self, reply: Reply) -> None:
        if not self._kept:
            self._kept = True
            await self._keep(reply)


class Idempotency:
    def __init__(
        self,
        requests: Requests,
        wait_s: float,
        *,
        tasks: TaskSet,
        completion: Completion,
        chunk: Chunk,
        reply_error: ReplyError,
    ) -> None:
        self.requests = requests
        self.wait_s = wait_s
        self._tasks = tasks
        self._completion = completion
        self._chunk = chunk
        self._reply_error = reply_error

    async def begin(
        self, request: web.Request, body: Any, stream: bool, session_key: str, ident: str
    ) -> FutureResponder | web.StreamResponse | None:
        """None without the header; else the responder of the request's owner, or the
        finished response for a retry (the stored answer, or an error)."""
        key = request.headers.get(HEADER)
        if key is None:
            return None
        if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
            return _error(
                400,
                f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                "invalid_idempotency_key",
            )
        request_id = f"http:{caller_of(request)}:{key}"
        canonical = json.dumps(
            [body, request.headers.get(SESSION_HEADER, "")], sort_keys=True, separators=(",", ":")
        )
        fingerprint = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
        deadline = time.monotonic() + self.wait_s
        delay = POLL_FIRST_S
        try:
            while True:
                claim = await self.requests.claim(request_id, fingerprint, self.requests.window_s)
                if claim.new:
                    owner = claim.owner
                    # Kept in the durable inbox: if this process dies, the process that
                    # resumes the request answers it under this claim, so the claim must
                    # not lapse and let a retry run it a second time (no renewing lease).
                    target = ReplyTarget(
                        PLATFORM,
                        session_key,
                        extra=(
                            ("fingerprint", fingerprint),
                            ("ident", ident),
                            ("owner", owner),
                            ("request", request_id),
                        ),
                    )
                    return OwnerResponder(
                        lambda reply, owner=owner: self._keep(  # type: ignore[misc]
                            request_id, owner, fingerprint, session_key, ident, reply
                        ),
                        target,
                    )
                if claim.fingerprint != fingerprint:
                    return _error(
                        422,
                        f"this {HEADER} was already used for a different request",
                        "idempotency_key_reused",
                    )
                if claim.answer is not None:
                    self.requests.replayed("http")
                    return await self._replay(request, Stored.decode(claim.answer), stream)
                if time.monotonic() >= deadline:
                    return _error(
                        409,
                        f"the request with this {HEADER} is still running; retry later",
                        "request_in_progress",
                        "conflict_error",
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX_S)
        except StoreError as exc:
            log.error("http: %s check failed: %s", HEADER, exc)
            return _error(
                503,
                "the server cannot check this request just now; retry later",
                "store_unavailable",
                "server_error",
            )

    def responder(self, target: ReplyTarget) -> Responder:
        """Answer a request resumed from the durable inbox (its client's connection died
        with the process that took it): the answer is stored under its claim, where the
        client's retry with the same `Idempotency-Key`, on any replica, finds it."""
        extra = dict(target.extra)
        request_id, fingerprint, ident = extra["request"], extra["fingerprint"], extra["ident"]
        owner, key = extra.get("owner", ""), target.channel
        return ResumedResponder(lambda reply: self._keep(request_id, owner, fingerprint, key, ident, reply))

    async def _keep(
        self, request_id: str, owner: str, fingerprint: str, session_key: str, ident: str, reply: Reply
    ) -> Stored | None:
        try:
            if reply.kind in NOTHING_STORED:
                await self.requests.release(request_id, owner)
                return None
            problem = self._reply_error(reply)
            if problem is None:
                body = self._completion(ident, reply.text, _model_of(session_key))
                stored = Stored(200, body, reply.text, session_key, ident)
            else:
                error = {
                    "message": problem.message,
                    "type": problem.kind,
                    "param": None,
                    "code": problem.code or None,
                }
                stored = Stored(problem.status, {"error": error}, reply.text, session_key, ident)
            await self.requests.finish(request_id, owner, fingerprint, stored.encode())
        except StoreError as exc:  # the answer still reaches this client; a retry may wait in vain
            log.error("http: could not store the answer for an %s: %s", HEADER, exc)
            return None
        return stored

    async def _replay(self, request: web.Request, stored: Stored, stream: bool) -> web.StreamResponse:
        if stored.status != 200 or not stream:
            return stored.response()
        headers = {SESSION_HEADER: stored.session_key}
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
        )
        await resp.prepare(request)
        model = _model_of(stored.session_key)
        await resp.write(
            self._chunk(stored.ident, model, {"role": "assistant", "content": stored.text}, None)
        )
        await resp.write(self._chunk(stored.ident, model, {}, "stop"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
