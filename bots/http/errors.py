"""OpenAI-style error responses, for every status the API answers with (404 and 405 too)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from bots.http import wire
from bots.http.wire import ErrorObject

log = logging.getLogger("chatlane.http")

RETRY_AFTER_S = 1
"""`Retry-After` of a 429 (queue full) and a 503 (shutting down, too many connections)."""
SHUTTING_DOWN_TEXT = "the server is shutting down; send it again in a minute"

_KINDS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """A request refused with an OpenAI-style error object."""

    def __init__(
        self, status: int, message: str, kind: str = "", code: str = "", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.kind = kind or _KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> ErrorObject:
        return wire.error_object(self.message, self.kind, self.code or None, self.param)

    def response(self) -> web.Response:
        headers: dict[str, str] = {}
        if self.status == 502:  # the message is already in memory: a retry would say it twice
            headers["x-should-retry"] = "false"
        if self.status in (429, 503):
            headers["Retry-After"] = str(RETRY_AFTER_S)
        return web.Response(
            body=wire.error_body(self.body()),
            status=self.status,
            content_type="application/json",
            headers=headers,
        )


def shutting_down() -> ApiError:
    return ApiError(503, SHUTTING_DOWN_TEXT, "server_error", "shutting_down")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (no such route, wrong method, body too large) as OpenAI errors."""
    try:
        return await handler(request)
    except ApiError as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        else:
            message = exc.reason
        refused = ApiError(exc.status, message, code=exc.reason.lower().replace(" ", "_"))
        response = refused.response()
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


REFUSED_STATUSES = frozenset({400, 401, 403, 413, 429})
"""Refusals worth an access-log line: a bad client, a wrong token, a rate limit."""


class RefusalLog:
    """One access-log line per refused request (`REFUSED_STATUSES`), at most `per_window`
    lines per `window_s`; past that the refusals are counted and one line says how many
    were not logged, so a flood of bad requests cannot flood the log."""

    def __init__(self, per_window: int = 20, window_s: float = 10.0) -> None:
        self.per_window, self.window_s = per_window, window_s
        self._window_start = 0.0
        self._logged = 0
        self._unlogged = 0

    def note(self, request: web.Request, status: int) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            if self._unlogged:
                log.warning(
                    "refused %d more requests in %gs (not logged one by one)", self._unlogged, self.window_s
                )
            self._window_start, self._logged, self._unlogged = now, 0, 0
        if self._logged >= self.per_window:
            self._unlogged += 1
            return
        self._logged += 1
        log.info(
            "refused %s %s %d from %s",
            request.method,
            request.path,
            status,
            request.remote or "-",
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "client": request.remote or "",
                }
            },
        )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if response.status in REFUSED_STATUSES:
            self.note(request, response.status)
        return response
