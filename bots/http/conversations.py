"""`POST /v1/conversations/{key}/messages`: speak first in a conversation (proactive send).

Body `{"text": "...", "mode": "prompt" | "notice"}` (mode defaults to prompt). The key is
the URL-encoded session key of the conversation. The request returns 202 once the
message is queued in the conversation's lane (behind a running turn), before it is
answered; the answer goes to the conversation's channel (Discord, Slack) or only into
its transcript (http, console keys). `Idempotency-Key` (per API token): a retry is not
sent again and gets `"status": "duplicate"`.

    400  malformed key or body           422  a key with no conversation to speak in
    401  token                           503  shutting down, or the store failed
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bots.http.errors import ApiError, shutting_down
from bots.http.idempotency import HEADER, MAX_KEY_LENGTH, caller_of
from core.door import Gateway, IdempotencyConflict, Mode, Unreachable
from core.model import Closed, StoreError, validate_key

ROUTE = "/v1/conversations/{key}/messages"
MODES: tuple[Mode, ...] = ("prompt", "notice")


def parse_body(body: Any) -> tuple[str, Mode]:
    if not isinstance(body, dict):
        raise ApiError(400, 'the body must be a JSON object {"text": ..., "mode": ...}', code="invalid_body")
    unknown = sorted(set(body) - {"text", "mode"})
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (fields: text, mode)", code="invalid_body")
    text, mode = body.get("text"), body.get("mode", "prompt")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "text must be a non-empty string", code="invalid_body")
    if mode not in MODES:
        raise ApiError(400, f"mode must be one of {', '.join(MODES)}", code="invalid_body")
    return text, mode


def handler(
    gateway: Gateway,
    authorize: Callable[[web.Request], None],
    read_body: Callable[[web.Request], Awaitable[object]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def send(request: web.Request) -> web.StreamResponse:
        authorize(request)
        try:
            key = validate_key(request.match_info["key"])
        except ValueError as exc:
            raise ApiError(400, str(exc), code="invalid_session_key") from None
        text, mode = parse_body(await read_body(request))
        idempotency = None
        if (given := request.headers.get(HEADER)) is not None:
            if not 0 < len(given) <= MAX_KEY_LENGTH or not given.isprintable() or not given.isascii():
                raise ApiError(400, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
            fingerprint = hashlib.sha256(json.dumps([key, text, mode]).encode()).hexdigest()
            idempotency = (f"{caller_of(request)}:{given}", fingerprint)
        try:
            sent = await gateway.send(key, text, mode, idempotency=idempotency)
        except Unreachable as exc:
            raise ApiError(422, f"cannot speak in {key}: {exc}", code="unreachable_conversation") from None
        except IdempotencyConflict as exc:
            raise ApiError(422, str(exc), code="idempotency_key_reused") from None
        except Closed:
            return shutting_down().response()
        except StoreError:
            raise ApiError(503, "the store is unavailable; try again", code="store_unavailable") from None
        body = {**sent.to_json(), "status": "duplicate" if sent.duplicate else "queued"}
        return web.json_response(body, status=202)

    return send
