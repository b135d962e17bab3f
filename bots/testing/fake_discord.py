"""A small fake Discord (REST v10 + gateway websocket) on 127.0.0.1 for integration tests.

Real discord.py code talks to it over real HTTP and a real websocket; the adapter is
pointed at it through its `api_base_url` / `gateway_url` settings. It knows one guild
with two text channels, a public thread under the first, two people (alice has the
"helpers" role) and the bot, plus DMs. It records every REST call, and can refuse sends
(403), rate-limit them (429), reject the token (401), fail the command sync, drop the
gateway connection and replay events on the RESUME that follows. Messages the bot
sent can be edited (PATCH) and deleted (DELETE); `rate_limit` answers any route with
429s (`retry_after`), and every call is recorded with its (monotonic) time.

How a plugin author uses it: docs/testing-your-agent.md.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from bots.testing import eventually
from bots.testing.server import serve_on_loopback

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
_last_id = 0


def snowflake(at: float | None = None) -> str:
    """A Discord id made as Discord makes them: the creation time (ms since 2015) in the
    high bits, so `discord.Message.created_at` (read from the id) is the message's real
    time. Ids made for "now" only grow; `at` (epoch seconds) makes one for the past."""
    global _last_id
    ms = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
    made = ms << 22
    if at is None:
        made = max(made, _last_id + 1)
        _last_id = made
    else:
        made |= next(_past) & 0x3FFFFF
    return str(made)


_past = itertools.count(1)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def iso_of(snowflake_id: str) -> str:
    """The ISO time in a Discord id (what a message's `timestamp` says)."""
    ms = (int(snowflake_id) >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def jresp(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly "application/json";
    # aiohttp's json_response appends "; charset=utf-8".
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def user_obj(uid: str, name: str, bot: bool = False) -> JSON:
    return {
        "id": uid,
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def member_obj(roles: list[str], user: JSON | None = None) -> JSON:
    m: JSON = {"roles": roles, "joined_at": now_iso(), "deaf": False, "mute": False, "flags": 0}
    if user is not None:
        m["user"] = user
    return m


@dataclass
class Call:
    method: str
    path: str
    json: Any
    headers: dict[str, str]
    query: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    """When the fake received it (time.monotonic)."""
    status: int = 200
    """What the fake answered (set once it decided)."""


@dataclass
class RouteLimit:
    """Answer calls matching `method` + `path_regex` with 429 (`retry_after` s), `times` times."""

    method: str
    path_regex: str
    times: int
    retry_after: float = 0.05


class FakeDiscord:
    """One guild, its channels and people, the bot's REST API and its gateway."""

    def __init__(
        self,
        *,
        token: str = "fake-token",
        compress: bool = False,
        enforce_message_content: bool = True,
        heartbeat_interval_ms: int = 41_250,
    ) -> None:
        self.token = token
        self.compress = compress
        self.enforce_message_content = enforce_message_content
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.bot_id = snowflake()
        self.app_id = snowflake()
        self.guild_id = snowflake()
        self.channel_id = snowflake()
        self.other_channel_id = snowflake()
        self.thread_id = snowflake()
        self.role_id = snowflake()
        self.alice_id = snowflake()
        self.bob_id = snowflake()
        self.dm_ids = {self.alice_id: snowflake(), self.bob_id: snowflake()}
        self.names = {self.alice_id: "alice", self.bob_id: "bob"}
        self.roles_of: dict[str, list[str]] = {self.alice_id: [self.role_id], self.bob_id: []}

        self.calls: list[Call] = []
        self.history: dict[str, list[JSON]] = {}
        """Every message of each channel, oldest first: dispatched, sent by the bot or seeded."""
        self.files: dict[str, bytes] = {}
        """Attachment bytes served at `/attachments/<id>/<name>`, by attachment id."""
        self.forbidden_history: set[str] = set()
        """Reading these channels' history gets 403 Missing Access (no Read Message History)."""
        self.forbidden_channels: set[str] = set()
        """Sends and typing in these channels get 403 Missing Permissions."""
        self.rate_limited_sends = 0
        """The next N message sends get a 429 first."""
        self.route_limits: list[RouteLimit] = []
        self.retry_after = 0.05
        self.fail_command_sync = False
        self.replay_on_resume = 0
        """On RESUME, re-send the last N MESSAGE_CREATE events (as a real resume may)."""
        self.close_on_identify: int | None = None
        """Close the gateway with this code instead of READY (4014: intents not enabled)."""
        self.identify: JSON | None = None
        self.resumes = 0
        self.received_ops: list[int] = []
        self.port = 0
        self._messages_sent: list[JSON] = []
        self._dispatched_messages: list[JSON] = []
        self._ws: web.WebSocketResponse | None = None
        self._clients: list[web.WebSocketResponse] = []
        """Every open gateway connection (several processes or shards may connect)."""
        self._zctx: Any = None
        self._seq = 0
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ URLs
    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # --------------------------------------------------------------- payloads
    def bot_user(self) -> JSON:
        return user_obj(self.bot_id, "testbot", bot=True) | {
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
        }

    def person(self, uid: str) -> JSON:
        return user_obj(uid, self.names[uid])

    def _text_channel(self, cid: str, name: str, position: int) -> JSON:
        return {
            "id": cid,
            "type": 0,
            "name": name,
            "position": position,
            "guild_id": self.guild_id,
            "permission_overwrites": [],
            "nsfw": False,
        }

    def thread_payload(self) -> JSON:
        return {
            "id": self.thread_id,
            "guild_id": self.guild_id,
            "parent_id": self.channel_id,
            "owner_id": self.alice_id,
            "name": "a thread",
            "type": 11,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": now_iso(),
                "locked": False,
            },
        }

    def guild_payload(self) -> JSON:
        everyone = {
            "id": self.guild_id,
            "name": "@everyone",
            "permissions": str(0x7FFFFFFFFFFF),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
        }
        helpers = everyone | {"id": self.role_id, "name": "helpers", "position": 1}
        return {
            "id": self.guild_id,
            "name": "Test Guild",
            "owner_id": self.alice_id,
            "unavailable": False,
            "member_count": 3,
            "large": False,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [everyone, helpers],
            "channels": [
                self._text_channel(self.channel_id, "general", 0),
                self._text_channel(self.other_channel_id, "random", 1),
            ],
            "threads": [self.thread_payload()],
            "members": [
                member_obj([], self.bot_user()),
                member_obj(self.roles_of[self.alice_id], self.person(self.alice_id)),
                member_obj(self.roles_of[self.bob_id], self.person(self.bob_id)),
            ],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def message_payload(
        self,
        content: str,
        *,
        author: JSON,
        channel_id: str,
        in_guild: bool,
        roles: list[str] | None = None,
        mentions: list[JSON] | None = None,
        reply_to: JSON | None = None,
        attachments: list[JSON] | None = None,
        at: float | None = None,
    ) -> JSON:
        ident = snowflake(at)
        d: JSON = {
            "id": ident,
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": iso_of(ident),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions or [],
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "components": [],
        }
        if reply_to is not None:
            d["type"] = 19
            d["message_reference"] = {"message_id": reply_to["id"], "channel_id": channel_id, "type": 0}
            d["referenced_message"] = reply_to
        if in_guild:
            d["guild_id"] = self.guild_id
            d["member"] = member_obj(roles or [])
            if reply_to is not None:
                d["message_reference"]["guild_id"] = self.guild_id
        return d

    # ------------------------------------------------------- what people do
    async def send_message(
        self,
        content: str,
        *,
        user: str | None = None,
        channel: str | None = None,
        dm: bool = False,
        mention: bool = False,
        reply_to: JSON | None = None,
        author: JSON | None = None,
        files: dict[str, bytes] | None = None,
    ) -> JSON:
        """Dispatch a MESSAGE_CREATE from `user` (alice by default); returns its payload.

        `mention` prefixes the bot's mention like a Discord client does; `dm` sends it
        in the user's DM channel with the bot; `reply_to` makes it a reply to that message.
        """
        uid = user or self.alice_id
        if mention:
            content = f"<@{self.bot_id}> {content}"
        d = self.message_payload(
            content,
            author=author or self.person(uid),
            channel_id=self.dm_ids[uid] if dm else channel or self.channel_id,
            in_guild=not dm,
            roles=self.roles_of.get(uid, []),
            mentions=[self.bot_user()] if mention else [],
            reply_to=reply_to,
            attachments=[self.attachment(name, data) for name, data in (files or {}).items()],
        )
        addressed = mention or (reply_to is not None and reply_to["author"]["id"] == self.bot_id)
        intents = (self.identify or {}).get("intents", 0)
        if self.enforce_message_content and not intents & (1 << 15) and not dm and not addressed:
            # Discord blanks content without the message content intent, except in
            # DMs and messages that mention the bot.
            d = d | {"content": "", "embeds": [], "attachments": [], "components": []}
        await self.dispatch("MESSAGE_CREATE", d)
        return d

    def attachment(self, name: str, data: bytes, *, size: int | None = None) -> JSON:
        """An attachment object whose bytes this fake serves (`size` may claim otherwise)."""
        aid = snowflake()
        self.files[aid] = data
        url = f"http://127.0.0.1:{self.port}/attachments/{aid}/{name}"
        return {
            "id": aid,
            "filename": name,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
        }

    def seed_history(
        self, channel: str, texts: list[str], *, user: str | None = None, at: Sequence[float] = ()
    ) -> list[JSON]:
        """Messages said in `channel` before the test starts (not dispatched), oldest first;
        `at`: their times (epoch seconds, one per text), else now."""
        made = []
        for i, text in enumerate(texts):
            uid = user or self.alice_id
            d = self.message_payload(
                text,
                author=self.person(uid),
                channel_id=channel,
                in_guild=channel not in self.dm_ids.values(),
                roles=self.roles_of.get(uid, []),
                at=at[i] if at else None,
            )
            self.history.setdefault(channel, []).append(d)
            made.append(d)
        return made

    async def send_interaction(
        self,
        name: str,
        *,
        user: str | None = None,
        channel: str | None = None,
        dm: bool = False,
        options: dict[str, str] | None = None,
    ) -> JSON:
        """Dispatch an INTERACTION_CREATE for the slash command `/name` (with string `options`)."""
        uid = user or self.alice_id
        cid = self.dm_ids[uid] if dm else channel or self.channel_id
        d: JSON = {
            "id": snowflake(),
            "application_id": self.app_id,
            "type": 2,
            "token": f"itoken-{snowflake()}",
            "version": 1,
            "data": {
                "id": snowflake(),
                "name": name,
                "type": 1,
                "options": [{"name": k, "type": 3, "value": v} for k, v in (options or {}).items()],
            },
            "channel_id": cid,
            "locale": "en-US",
            "app_permissions": str(0x7FFFFFFFFFFF),
            "entitlements": [],
            "attachment_size_limit": 8_388_608,
            "authorizing_integration_owners": {"0": self.guild_id} if not dm else {"1": uid},
            "context": 1 if dm else 0,
        }
        if dm:
            d["user"] = self.person(uid)
            d["channel"] = {"id": cid, "type": 1, "recipients": [self.person(uid)]}
        else:
            d["guild_id"] = self.guild_id
            d["guild_locale"] = "en-US"
            d["member"] = member_obj(self.roles_of.get(uid, []), self.person(uid)) | {
                "permissions": str(0x7FFFFFFFFFFF)
            }
            kind = 11 if cid == self.thread_id else 0
            d["channel"] = {"id": cid, "type": kind, "guild_id": self.guild_id, "name": "x"}
            if cid == self.thread_id:
                d["channel"] = self.thread_payload()
        await self.dispatch("INTERACTION_CREATE", d)
        return d

    # ------------------------------------------------------------------ REST
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            with contextlib.suppress(ValueError):
                body = json.loads(raw) if raw else None
        path = request.path.removeprefix("/api/v10")
        m, p = request.method, path
        call = Call(m, p, body, dict(request.headers), dict(request.query))
        if request.headers.get("Authorization") != f"Bot {self.token}":
            self._record(call)
            return jresp({"message": "401: Unauthorized", "code": 0}, status=401)
        if (m, p) == ("GET", "/users/@me"):
            self._record(call)
            return jresp(self.bot_user())
        if (m, p) == ("GET", "/oauth2/applications/@me"):
            self._record(call)
            return jresp(
                {
                    "id": self.app_id,
                    "name": "testapp",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "verify_key": "0" * 64,
                    "owner": self.person(self.alice_id),
                    "flags": 0,
                    "team": None,
                }
            )
        if (m, p) == ("GET", "/gateway/bot"):  # only AutoShardedClient asks
            self._record(call)
            limits = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
            return jresp({"url": self.gateway_url, "shards": 1, "session_start_limit": limits})
        if (limited := self._route_limit(call)) is not None:
            return limited
        listing = re.fullmatch(r"/channels/(\d+)/messages", p)
        if m == "GET" and listing:
            return self._channel_history(call, listing.group(1))
        channel = re.fullmatch(r"/channels/(\d+)/(typing|messages)", p)
        message = re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p)
        if m in ("PATCH", "DELETE") and message:
            return self._message_change(call, message.group(1), message.group(2))
        if m == "DELETE" and re.fullmatch(r"/channels/\d+/messages/\d+/reactions/[^/]+/@me", p):
            self._record(call)
            return web.Response(status=204)
        if m == "POST" and channel:
            return self._channel_post(call, channel.group(1), channel.group(2))
        if m == "PUT" and re.fullmatch(r"/channels/\d+/messages/\d+/reactions/[^/]+/@me", p):
            self._record(call)
            return web.Response(status=204)
        if m == "PUT" and p == f"/applications/{self.app_id}/commands":
            self._record(call)
            if self.fail_command_sync:
                return jresp({"message": "Missing Access", "code": 50001}, status=403)
            return jresp([self._command(c) for c in body or []])
        if m == "POST" and re.fullmatch(r"/interactions/\d+/[^/]+/callback", p):
            self._record(call)
            iid = p.split("/")[2]
            flags = ((body or {}).get("data") or {}).get("flags", 0)
            return jresp(
                {
                    "interaction": {
                        "id": iid,
                        "type": 2,
                        "response_message_id": snowflake(),
                        "response_message_loading": False,
                        "response_message_ephemeral": bool(flags & 64),
                    }
                }
            )
        self._record(call)
        return jresp({"message": f"fake: no route {m} {p}", "code": 0}, status=404)

    def _channel_post(self, call: Call, cid: str, what: str) -> web.Response:
        self._record(call)
        if cid in self.forbidden_channels:
            return jresp({"message": "Missing Permissions", "code": 50013}, status=403)
        if what == "typing":
            return web.Response(status=204)
        if self.rate_limited_sends > 0:
            self.rate_limited_sends -= 1
            retry = f"{self.retry_after:.3f}"
            headers = {"Via": "1.1 google", "Retry-After": retry, "X-RateLimit-Scope": "user"}
            data = {
                "message": "You are being rate limited.",
                "retry_after": self.retry_after,
                "global": False,
            }
            return jresp(data, status=429, headers=headers)
        body = call.json or {}
        msg = self.message_payload(
            body.get("content") or "",
            author=self.bot_user(),
            channel_id=cid,
            in_guild=cid not in self.dm_ids.values(),
        )
        self._messages_sent.append(msg | {"request": body})
        self.history.setdefault(cid, []).append(msg)
        return jresp(msg)

    def _channel_history(self, call: Call, cid: str) -> web.Response:
        """`GET /channels/{id}/messages?before=&limit=`: newest first, as Discord answers."""
        self._record(call)
        if cid in self.forbidden_history:
            return jresp({"message": "Missing Access", "code": 50001}, status=403)
        before = int(call.query.get("before", str(1 << 63)))
        limit = min(int(call.query.get("limit", "50")), 100)
        older = [m for m in self.history.get(cid, []) if int(m["id"]) < before]
        return jresp(sorted(older, key=lambda m: int(m["id"]), reverse=True)[:limit])

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        data = self.files.get(request.match_info["aid"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    def rate_limit(self, method: str, path_regex: str, times: int = 1, retry_after: float = 0.05) -> None:
        """The next `times` calls of this route get a 429 with `retry_after` (per-route limit)."""
        self.route_limits.append(RouteLimit(method, path_regex, times, retry_after))

    def _route_limit(self, call: Call) -> web.Response | None:
        for limit in self.route_limits:
            if limit.times > 0 and limit.method == call.method and re.fullmatch(limit.path_regex, call.path):
                limit.times -= 1
                call.status = 429
                self._record(call)
                headers = {
                    "Via": "1.1 google",
                    "Retry-After": f"{limit.retry_after:.3f}",
                    "X-RateLimit-Scope": "user",
                    "X-RateLimit-Bucket": f"fake-{limit.method}-{limit.path_regex}",
                }
                data = {
                    "message": "You are being rate limited.",
                    "retry_after": limit.retry_after,
                    "global": False,
                }
                return jresp(data, status=429, headers=headers)
        return None

    def _message_change(self, call: Call, cid: str, mid: str) -> web.Response:
        self._record(call)
        msg = next((x for x in self._messages_sent if x["id"] == mid and x["channel_id"] == cid), None)
        if msg is None or msg.get("deleted"):
            call.status = 404
            return jresp({"message": "Unknown Message", "code": 10008}, status=404)
        if call.method == "DELETE":
            msg["deleted"] = True
            return web.Response(status=204)
        body = call.json or {}
        if "content" in body:
            msg["content"] = body["content"] or ""
        msg["edited_timestamp"] = now_iso()
        msg["edits"] = msg.get("edits", 0) + 1
        return jresp({k: v for k, v in msg.items() if k not in ("request", "edits", "deleted")})

    def _command(self, c: JSON) -> JSON:
        return {
            "id": snowflake(),
            "application_id": self.app_id,
            "version": snowflake(),
            "type": c.get("type", 1),
            "name": c["name"],
            "description": c.get("description", ""),
            "options": c.get("options", []),
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
        }

    def _record(self, call: Call) -> None:
        self.calls.append(call)

    # ------------------------------------------------------------ inspection
    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(path_regex, c.path)]

    def sent_to(self, channel_id: str) -> list[JSON]:
        """The messages the bot sent successfully to a channel, oldest first; each has the
        request body under "request"."""
        return [m for m in self._messages_sent if m["channel_id"] == channel_id]

    def shown_in(self, channel_id: str) -> list[str]:
        """What the bot's messages in a channel read now (edits applied, deleted ones gone)."""
        return [m["content"] for m in self.sent_to(channel_id) if not m.get("deleted")]

    def edits_of(self, message_id: str) -> list[Call]:
        """Successful PATCHes of one message, oldest first."""
        path = rf"/channels/\d+/messages/{message_id}"
        return [c for c in self.calls_to("PATCH", path) if c.status == 200]

    async def wait_until(self, check: Any, timeout: float = 5.0) -> None:
        """Wait until `check()` is true."""
        await eventually(check, timeout=timeout)

    async def wait_for_call(self, method: str, path_regex: str, timeout: float = 5.0) -> Call:
        await self.wait_until(lambda: self.calls_to(method, path_regex), timeout)
        return self.calls_to(method, path_regex)[0]

    async def wait_for_sent(self, channel_id: str, n: int = 1, timeout: float = 5.0) -> list[JSON]:
        """Wait until the bot has sent at least `n` messages to the channel."""
        await self.wait_until(lambda: len(self.sent_to(channel_id)) >= n, timeout)
        return self.sent_to(channel_id)

    # --------------------------------------------------------------- gateway
    async def _send(self, payload: JSON) -> None:
        if self._ws is None:
            raise RuntimeError("no gateway client connected")
        text = json.dumps(payload)
        if self._zctx is not None:
            data = self._zctx.compress(text.encode()) + self._zctx.flush(zlib.Z_SYNC_FLUSH)
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(text)

    async def dispatch(self, event: str, data: JSON) -> None:
        self._seq += 1
        if event == "MESSAGE_CREATE":
            self._dispatched_messages.append(data)
            known = self.history.setdefault(data["channel_id"], [])
            if all(m["id"] != data["id"] for m in known):
                known.append(data)
        await self._send({"op": 0, "t": event, "s": self._seq, "d": data})

    async def broadcast(self, event: str, data: JSON) -> None:
        """Dispatch one event to every connected client, as a replay across two shards or
        processes delivers it (uncompressed connections only)."""
        self._seq += 1
        text = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        for ws in list(self._clients):
            await ws.send_str(text)

    @property
    def connections(self) -> int:
        return len(self._clients)

    async def disconnect(self, code: int = 4000) -> None:
        """Close the gateway connection as Discord does before a RESUME."""
        if self._ws is not None:
            await self._ws.close(code=code)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        self._clients.append(ws)
        wants_zlib = request.query.get("compress") == "zlib-stream"
        self._zctx = zlib.compressobj() if self.compress and wants_zlib else None
        hello = {"heartbeat_interval": self.heartbeat_interval_ms}
        await self._send({"op": 10, "d": hello, "s": None, "t": None})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            p = json.loads(msg.data)
            op = p["op"]
            self.received_ops.append(op)
            if op == 1:  # heartbeat
                await self._send({"op": 11, "d": None, "s": None, "t": None})
            elif op == 2:  # identify
                if self.close_on_identify is not None:
                    await ws.close(code=self.close_on_identify)
                    break
                await self._ready(p["d"])
            elif op == 6:  # resume: replay (possibly already seen) events, then RESUMED
                self.resumes += 1
                replay = self._dispatched_messages[-self.replay_on_resume :] if self.replay_on_resume else []
                for data in replay:
                    await self.dispatch("MESSAGE_CREATE", data)
                await self.dispatch("RESUMED", {})
            # op 3 presence, op 8 request members: ignored
        self._clients.remove(ws)
        if self._ws is ws:
            self._ws = None
        return ws

    async def _ready(self, identify: JSON) -> None:
        self.identify = identify
        shard = {"shard": identify["shard"]} if "shard" in identify else {}  # AutoSharded needs it
        await self.dispatch(
            "READY",
            shard
            | {
                "v": 10,
                "user": self.bot_user(),
                "session_id": "fake-session",
                "resume_gateway_url": self.gateway_url,
                "guilds": [{"id": self.guild_id, "unavailable": True}],
                "application": {"id": self.app_id, "flags": 0},
            },
        )
        await self.dispatch("GUILD_CREATE", self.guild_payload())

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/attachments/{aid}/{name}", self._attachment)
        self._runner, self.port = await serve_on_loopback(app)
        return self

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
