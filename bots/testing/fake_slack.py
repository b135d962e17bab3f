"""A small fake Slack on 127.0.0.1: Web API, Socket Mode websocket, signed Events API posts.

Real slack_sdk / slack_bolt code talks to it: point `AsyncWebClient` at
`base_url=fake.api_base` ("http://127.0.0.1:PORT/api/"; the trailing slash matters).
`apps.connections.open` hands out `ws://127.0.0.1:PORT/link/`, where the fake sends
`hello`, pushes envelopes and records every ack. Faults (`fail`) make a method answer
with a Slack error (`not_in_channel`) or an HTTP 429 `ratelimited` with `Retry-After`.

The bot's messages are kept: `chat.update` and `chat.delete` change them, and the
native streaming methods (`chat.startStream` / `appendStream` / `stopStream`) build
them from their chunks (bots/testing/fake_slack_stream.py checks them as Slack's
reference documents them: markdown text, `task_update` cards and `plan_update` titles,
one way of sending text per stream); `native_refusal` makes those three answer with that
error (`not_allowed`, `unknown_method`) as an app without the feature gets, and
`task_refusal` makes every call that carries a task or plan chunk answer with its error.
`assistant.threads.setStatus` checks its arguments too. Every call is recorded with its
(monotonic) time; `shown` reads the messages as a person would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

from bots.testing import eventually
from bots.testing.fake_slack_stream import TASK_CHUNKS, check_status, check_stream, chunks_of, text_mode
from bots.testing.server import serve_on_loopback

TEAM, BOT_USER, BOT_ID, APP_ID, HUMAN = "T0TEST", "U0BOT", "B0BOT", "A0APP", "U0HUMAN"
GENERAL, DM = "C0GENERAL", "D0HUMAN"

_ts = itertools.count(1)
STREAM_METHODS = frozenset({"chat.startStream", "chat.appendStream", "chat.stopStream"})
T = TypeVar("T")
Json = dict[str, Any]


def next_ts() -> str:
    """A fresh Slack timestamp, e.g. "1700000000.000001"."""
    return f"{int(time.time())}.{next(_ts):06d}"


@dataclass(frozen=True, slots=True)
class ApiCall:
    method: str
    """e.g. "chat.postMessage"."""
    args: Json
    """Query, form and JSON arguments merged."""
    token: str | None
    error: str | None = None
    """The error the fake answered with, if it failed the call."""
    at: float = field(default_factory=time.monotonic)
    """When the fake received it (time.monotonic)."""


@dataclass(slots=True)
class Posted:
    """One message of the bot, as it reads now."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str
    streaming: bool = False
    deleted: bool = False
    updates: int = 0
    blocks: list[Json] = field(default_factory=list)
    """Block Kit blocks (e.g. buttons), as last posted or updated."""
    tasks: dict[str, Json] = field(default_factory=dict)
    """A native stream's task cards by id, each as its last `task_update` left it."""
    plan_title: str | None = None
    """The title of its plan (the last `plan_update`), if it got one."""
    task_display_mode: str = "timeline"
    text_mode: str | None = None
    """How the stream sends its text: "markdown_text" (the argument) or "chunks"."""


@dataclass(slots=True)
class Fault:
    """Answer `method` (optionally only for one channel) with `error`, `times` times."""

    method: str
    error: str
    times: int = 1
    channel: str | None = None
    status: int = 200
    retry_after: int | None = None


@dataclass(slots=True)
class FakeSlack:
    bot_tokens: tuple[str, ...] = ("xoxb-test",)
    """Tokens auth.test accepts."""
    calls: list[ApiCall] = field(default_factory=list)
    acks: list[Json] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    channel_history: dict[str, list[Json]] = field(default_factory=dict)
    """Each channel's messages (thread replies included), oldest first: remembered or posted."""
    files: dict[str, bytes] = field(default_factory=dict)
    """File bytes served at `url_private`, by file id."""
    file_tokens: tuple[str, ...] | None = None
    """Tokens `url_private` accepts (None: the bot tokens); anything else gets a 403."""
    people: dict[str, str] = field(default_factory=lambda: {HUMAN: "human"})
    """Display names `users.info` knows, by user id."""
    downloads: list[tuple[str, str | None]] = field(default_factory=list)
    """(file id, token) of every download attempt."""
    login_redirect: bool = False
    """Answer a refused file download with a redirect to a sign-in page instead of a 403."""
    port: int = 0
    messages: list[Posted] = field(default_factory=list)
    native_refusal: str | None = None
    """Answer the native streaming methods with this error (e.g. "not_allowed")."""
    task_refusal: str | None = None
    """Answer every streaming call that carries a task_update or plan_update chunk with this error."""
    delays: dict[str, list[float]] = field(default_factory=dict)
    """Per method, how long its next calls wait before they are answered (one entry each,
    used up in order): calls that finish out of the order they were made."""
    ws_connected: asyncio.Event = field(default_factory=asyncio.Event)
    _ws: web.WebSocketResponse | None = None
    _runner: web.AppRunner | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def fail(self, fault: Fault) -> None:
        self.faults.append(fault)

    def calls_of(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def shown(self, channel: str | None = None) -> list[str]:
        """What the bot's messages (in `channel`) read now, oldest first; deleted ones gone."""
        return [m.text for m in self.messages if not m.deleted and channel in (None, m.channel)]

    def ok_calls(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls_of(method) if c.error is None]

    @property
    def posts(self) -> list[ApiCall]:
        """Every chat.postMessage that succeeded."""
        return [c for c in self.calls_of("chat.postMessage") if c.error is None]

    # ----------------------------------------------------------------- Web API
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: Json = dict(request.query)
        raw = await request.read()
        if raw and request.headers.get("Content-Type", "").startswith("application/json"):
            args.update(json.loads(raw))
        elif raw:
            args.update(parse_qsl(raw.decode()))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") or args.get("token")
        fault = next(
            (
                f
                for f in self.faults
                if f.times > 0 and f.method == method and f.channel in (None, args.get("channel"))
            ),
            None,
        )
        if fault is None and self.native_refusal and method in STREAM_METHODS:
            fault = Fault(method, self.native_refusal)
        tasks = any(c.get("type") in TASK_CHUNKS for c in chunks_of(args) or ())
        if fault is None and self.task_refusal and method in STREAM_METHODS and tasks:
            fault = Fault(method, self.task_refusal)
        call = ApiCall(method, args, token, fault.error if fault else None)
        self.calls.append(call)
        if self.delays.get(method):
            await asyncio.sleep(self.delays[method].pop(0))
        if fault is not None:
            fault.times -= 1
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return web.json_response(
                {"ok": False, "error": fault.error}, status=fault.status, headers=headers
            )
        answer = self._answer(method, args, token)
        if not answer.get("ok"):
            self.calls[self.calls.index(call)] = ApiCall(
                method, args, token, str(answer.get("error")), call.at
            )
        return web.json_response(answer)

    def _message(self, channel: Any, ts: Any) -> Posted | None:
        return next((m for m in self.messages if m.channel == channel and m.ts == ts and not m.deleted), None)

    def _stream(self, method: str, args: Json) -> Json:
        """chat.startStream / appendStream / stopStream on the kept messages."""
        channel = args.get("channel")
        message = None if method == "chat.startStream" else self._message(channel, args.get("ts"))
        if method != "chat.startStream":
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            if not message.streaming:
                return {"ok": False, "error": "message_not_in_streaming_state"}
        error = check_stream(method, args, None if message is None else message.text_mode)
        if error is not None:
            return {"ok": False, "error": error}
        if message is None:
            message = Posted(str(channel), next_ts(), str(args["thread_ts"]), "", streaming=True)
            message.task_display_mode = str(args.get("task_display_mode") or "timeline")
            self.messages.append(message)
        message.text_mode = message.text_mode or text_mode(args)
        message.text += str(args.get("markdown_text") or "")
        for chunk in chunks_of(args) or ():
            if chunk["type"] == "markdown_text":
                message.text += str(chunk["text"])
            elif chunk["type"] == "task_update":
                message.tasks[str(chunk["id"])] = dict(chunk)
            elif chunk["type"] == "plan_update":
                message.plan_title = str(chunk["title"])
        message.streaming = method != "chat.stopStream"
        return {"ok": True, "channel": channel, "ts": message.ts}

    def _answer(self, method: str, args: Json, token: str | None) -> Json:
        if method == "apps.connections.open":
            if not (token or "").startswith("xapp-"):
                return {"ok": False, "error": "not_allowed_token_type"}
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={uuid.uuid4()}"}
        if token not in self.bot_tokens:
            return {"ok": False, "error": "invalid_auth"}
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://fake.slack.test/",
                "team": "Test",
                "user": "testbot",
                "team_id": TEAM,
                "user_id": BOT_USER,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            }
        if method in STREAM_METHODS:
            return self._stream(method, args)
        if method in ("chat.update", "chat.delete"):
            message = self._message(args.get("channel"), args.get("ts"))
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            if method == "chat.delete":
                message.deleted = True
            else:
                message.text, message.updates = str(args.get("text") or ""), message.updates + 1
                message.streaming = False
                if "blocks" in args:
                    message.blocks = _blocks(args["blocks"])
            return {"ok": True, "channel": message.channel, "ts": message.ts}
        if method == "assistant.threads.setStatus":
            error = check_status(args)
            return {"ok": True} if error is None else {"ok": False, "error": error}
        if method == "chat.postMessage":
            ts = next_ts()
            thread = args.get("thread_ts")
            posted = Posted(str(args.get("channel")), ts, thread, str(args.get("text") or ""))
            posted.blocks = _blocks(args.get("blocks"))
            self.messages.append(posted)
            payload = {
                "type": "message",
                "text": args.get("text"),
                "user": BOT_USER,
                "bot_id": BOT_ID,
                "ts": ts,
            }
            stored = {**payload, "channel": args.get("channel")}
            if args.get("thread_ts"):
                stored["thread_ts"] = args["thread_ts"]
            self.remember(stored)
            return {"ok": True, "channel": args.get("channel"), "ts": ts, "message": payload}
        if method in ("reactions.add", "reactions.remove"):
            return {"ok": True}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": next_ts()}
        if method == "users.info":
            name = self.people.get(str(args.get("user")))
            if name is None:
                return {"ok": False, "error": "user_not_found"}
            return {
                "ok": True,
                "user": {"id": args.get("user"), "name": name, "profile": {"display_name": name}},
            }
        if method == "conversations.replies":
            return self._replies(args)
        if method == "conversations.history":
            return self._history(args)
        return {"ok": False, "error": "unknown_method"}

    # ------------------------------------------------------------- conversations
    def remember(self, event: Json) -> Json:
        """Keep a message event in its channel's history (as Slack does for what people say)."""
        self.channel_history.setdefault(str(event["channel"]), []).append(event)
        return event

    def seed(
        self, channel: str, texts: list[str], *, thread_ts: str | None = None, user: str = HUMAN
    ) -> list[Json]:
        """Messages said before the test starts, oldest first (a thread's root is its first)."""
        out = []
        for text in texts:
            ts = next_ts()
            msg: Json = {"type": "message", "text": text, "user": user, "ts": ts}
            if thread_ts is not None:
                msg["thread_ts"] = thread_ts
            out.append(self.remember({**msg, "channel": channel}))
        return out

    def _window(self, found: list[Json], args: Json) -> list[Json]:
        latest, oldest = float(args.get("latest") or "inf"), float(args.get("oldest") or 0)
        inclusive = str(args.get("inclusive", "false")).lower() in ("1", "true")
        return [
            m
            for m in found
            if (oldest < float(m["ts"]) < latest) or (inclusive and float(m["ts"]) in (latest, oldest))
        ]

    def _replies(self, args: Json) -> Json:
        """`conversations.replies`: the root and its replies, oldest first, paged by cursor."""
        root = str(args.get("ts"))
        thread = [
            m
            for m in self.channel_history.get(str(args.get("channel")), [])
            if root in (m["ts"], m.get("thread_ts"))
        ]
        found = self._window(sorted(thread, key=lambda m: float(m["ts"])), args)
        start = int(args.get("cursor") or 0)
        limit = int(args.get("limit") or 1000)
        page = found[start : start + limit]
        more = start + limit < len(found)
        meta = {"next_cursor": str(start + limit) if more else ""}
        return {"ok": True, "messages": page, "has_more": more, "response_metadata": meta}

    def _history(self, args: Json) -> Json:
        """`conversations.history`: top-level messages, newest first."""
        top = [
            m
            for m in self.channel_history.get(str(args.get("channel")), [])
            if m.get("thread_ts") in (None, m["ts"])
        ]
        found = sorted(self._window(top, args), key=lambda m: float(m["ts"]), reverse=True)
        limit = int(args.get("limit") or 100)
        return {"ok": True, "messages": found[:limit], "has_more": len(found) > limit}

    def file(self, name: str, data: bytes, *, size: int | None = None) -> Json:
        """A file object for a message's `files`, served at its `url_private` (token required)."""
        fid = f"F{uuid.uuid4().hex[:10].upper()}"
        self.files[fid] = data
        url = f"http://127.0.0.1:{self.port}/files-pri/{TEAM}-{fid}/{name}"
        return {
            "id": fid,
            "name": name,
            "mimetype": "application/octet-stream",
            "size": len(data) if size is None else size,
            "url_private": url,
            "url_private_download": url + "?download=1",
        }

    async def _signin(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<!DOCTYPE html><html><body>Sign in to Slack</body></html>", content_type="text/html"
        )

    async def _file(self, request: web.Request) -> web.Response:
        fid = request.match_info["fid"]
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth else None
        self.downloads.append((fid, token))
        allowed = self.bot_tokens if self.file_tokens is None else self.file_tokens
        if token not in allowed:
            if self.login_redirect:  # as real Slack does: a redirect to an HTML sign-in page
                raise web.HTTPFound(f"http://127.0.0.1:{self.port}/signin")
            return web.Response(status=403, text="forbidden")
        data = self.files.get(fid)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    # ------------------------------------------------------------------ waiting
    async def wait_for(self, probe: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until `probe()` returns something other than None; that."""

        def found() -> tuple[T] | None:
            hit = probe()
            return None if hit is None else (hit,)

        hit = await eventually(found, timeout=timeout)
        assert hit is not None  # eventually returns only a truthy value
        return hit[0]

    async def wait_for_posts(self, n: int, timeout: float = 5.0, **match: Any) -> list[ApiCall]:
        """The first `n` successful chat.postMessage calls whose args match `match`."""

        def probe() -> list[ApiCall] | None:
            hits = [c for c in self.posts if all(c.args.get(k) == v for k, v in match.items())]
            return hits[:n] if len(hits) >= n else None

        return await self.wait_for(probe, timeout)

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> Json:
        return await self.wait_for(
            lambda: next((a for a in self.acks if a.get("envelope_id") == envelope_id), None), timeout
        )

    # -------------------------------------------------------------- Socket Mode
    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # autoping answers the SDK's pings
        await ws.prepare(request)
        self._ws = ws
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                "connection_info": {"app_id": APP_ID},
            }
        )
        self.ws_connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.acks.append(json.loads(msg.data))
        return ws

    async def push(self, kind: str, payload: Json, *, retry_attempt: int = 0) -> str:
        """Send one Socket Mode envelope (`events_api`, `slash_commands`); its envelope_id."""
        if self._ws is None:
            raise RuntimeError("no Socket Mode connection")
        envelope_id = str(uuid.uuid4())
        await self._ws.send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
                "payload": payload,
            }
        )
        return envelope_id

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._link)
        app.router.add_get("/files-pri/{team}-{fid}/{name}", self._file)
        app.router.add_get("/signin", self._signin)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()


def _blocks(raw: Any) -> list[Json]:
    """Blocks as the Web API takes them: a list, or its JSON text (form-encoded calls)."""
    if isinstance(raw, str):
        raw = json.loads(raw)
    return list(raw) if isinstance(raw, list) else []


def buttons(message: Posted) -> list[str]:
    """The action ids of the buttons a message shows now."""
    return [
        e["action_id"] for b in message.blocks if b.get("type") == "actions" for e in b.get("elements", [])
    ]


def block_actions(message: Posted, action_id: str, *, user: str = HUMAN) -> Json:
    """The `block_actions` payload of `user` clicking the button `action_id` on `message`
    (push it as an `interactive` Socket Mode envelope)."""
    value = next(
        (
            e.get("value")
            for b in message.blocks
            for e in b.get("elements", [])
            if e.get("action_id") == action_id
        ),
        "",
    )
    return {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "test"},
        "user": {"id": user, "username": "someone", "team_id": TEAM},
        "api_app_id": APP_ID,
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        },
        "trigger_id": uuid.uuid4().hex,
        "channel": {"id": message.channel, "name": "general"},
        "message": {"type": "message", "ts": message.ts, "text": message.text, "blocks": message.blocks},
        "response_url": "https://hooks.slack.test/actions/1",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "b1",
                "value": value,
                "action_ts": next_ts(),
                "text": {"type": "plain_text", "text": "click"},
            }
        ],
    }


# -------------------------------------------------------------- payload helpers
def message_event(
    text: str,
    *,
    channel: str = GENERAL,
    user: str | None = HUMAN,
    kind: str = "message",
    thread_ts: str | None = None,
    channel_type: str | None = None,
    **extra: Any,
) -> Json:
    """A `message` (or `app_mention`) event with a fresh ts."""
    ts = next_ts()
    event: Json = {"type": kind, "text": text, "ts": ts, "channel": channel, "event_ts": ts, "team": TEAM}
    if user is not None:
        event["user"] = user
    if kind == "message":
        event["channel_type"] = channel_type or ("im" if channel.startswith("D") else "channel")
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    event.update(extra)
    return event


def mention_twin(event: Json) -> Json:
    """The `message` event Slack also sends for an `app_mention` (same ts, own event)."""
    return {**event, "type": "message", "channel_type": "channel"}


def event_callback(event: Json, event_id: str | None = None) -> Json:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10]}",
        "event_time": int(time.time()),
        "is_ext_shared_channel": False,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM,
                "user_id": BOT_USER,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
    }


def slash_command(command: str, text: str, *, channel: str = GENERAL, user: str = HUMAN) -> dict[str, str]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "team_domain": "test",
        "channel_id": channel,
        "channel_name": "directmessage" if channel.startswith("D") else "general",
        "user_id": user,
        "user_name": "human",
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "response_url": "https://hooks.slack.test/commands/1",
        "trigger_id": uuid.uuid4().hex,
    }


def signed_headers(
    secret: str, body: str, *, timestamp: int | None = None, content_type: str = "application/json"
) -> dict[str, str]:
    """Headers as Slack sends them, signed with slack_sdk's own SignatureVerifier."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = str(SignatureVerifier(secret).generate_signature(timestamp=ts, body=body))
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


async def post(
    session: aiohttp.ClientSession, url: str, body: str, headers: Mapping[str, str]
) -> tuple[int, str]:
    async with session.post(url, data=body, headers=dict(headers)) as response:
        return response.status, await response.text()


def form_body(fields: Mapping[str, str]) -> str:
    return urlencode(fields)
