"""The operator console's routes on the HTTP service (`[http] console = true`).

    GET  /console                  conversations, one page of the store's listing, filtered
    GET  /console/c/{key}          one conversation: facts, actions, live answer, transcript
    GET  /console/c/{key}/live     server-sent events of the answer being produced here
    POST /console/c/{key}/{stop|new|model}   through the gateway; logged with the operator
    GET  /console/health           adapters, store, turn chart, errors of the last hour
    GET/POST /console/login, POST /console/logout, GET /console/static/{name}

Every response carries the security headers of `auth.HEADERS` (strict CSP, no-store).
Actions use the same door as the platforms (`Gateway.stop_text`, `Gateway.command`), so a
Stop reaches a turn running on another replica through the store's stop request. The
live view and "running" columns only know turns run by THIS process.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import quote, unquote

from aiohttp import web

from bots.http.console import auth, health, pages, queue
from bots.runtime import Runtime
from core.door import Unreachable
from core.model import Closed, SessionEntry, SessionKey, StoreError, parse_key
from core.turn import FutureResponder

log = logging.getLogger("chatlane.console")

PAGE = 100
"""Conversations per page."""
TRANSCRIPT_PAGE = 50
ACTION_WAIT_S = 3.0
KEEPALIVE_S = 15.0
NOTICE_COOKIE = "chatlane_console_notice"
STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {"console.js": "text/javascript", "console.css": "text/css", "favicon.svg": "image/svg+xml"}
QUEUED_TEXT = "Queued behind the messages before it; it happens once they are answered."
CLOSED_TEXT = "chatlane is shutting down: nothing was done."
BAD_KEY_TEXT = "That is not a conversation key chatlane makes."
FORBIDDEN_TEXT = "Refused: this form did not come from this console page (reload it and try again)."
EMPTY_NOTICE_TEXT = "Nothing sent: the notice was empty."
UNREACHABLE_TEXT = "Nothing sent: the bot cannot speak in this conversation"
NOT_SENT_TEXT = "Nothing sent: the store could not keep it (see the log). Try again."
SENT_TEXT = "Sent: the notice is said in the conversation once what is before it is answered."
PROMPTED_TEXT = "Sent: the agent answers it in the conversation once what is before it is answered."
MAX_NOTICE = 4000
WRONG_TOKEN_TEXT = "That token is not the API token."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    def __init__(self, runtime: Runtime, token: str | None) -> None:
        self.runtime = runtime
        self.gateway = runtime.gateway
        self.watchers = runtime.gateway.turns.watchers
        self.sessions = auth.Sessions(token)
        self.errors = health.ErrorRing()
        self._static = {name: (STATIC / name).read_bytes() for name in STATIC_TYPES}

    def add_routes(self, app: web.Application) -> None:
        g = self._guarded
        app.router.add_get("/console", g(self._list))
        app.router.add_get("/console/", g(self._list))
        app.router.add_get("/console/login", g(self._login_form))
        app.router.add_post("/console/login", g(self._login))
        app.router.add_post("/console/logout", g(self._logout))
        app.router.add_get("/console/health", g(self._health))
        app.router.add_get("/console/static/{name}", g(self._file))
        app.router.add_get("/console/c/{key}", g(self._conversation))
        app.router.add_get("/console/c/{key}/live", g(self._live))
        app.router.add_post("/console/c/{key}/{action:stop|new|model|notice}", g(self._act))

    def start(self) -> None:
        logging.getLogger("chatlane").addHandler(self.errors)

    def stop(self) -> None:
        logging.getLogger("chatlane").removeHandler(self.errors)

    # ------------------------------------------------------------------ plumbing
    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    exc.headers.update(auth.HEADERS)
                    raise
                response = web.Response(
                    text=pages.error_page(exc.status, exc.text or exc.reason),
                    status=exc.status,
                    content_type="text/html",
                )
            if not response.prepared:  # an event stream set its headers before its first byte
                response.headers.update(auth.HEADERS)
            return response

        return guarded

    def _session(self, request: web.Request) -> auth.Session | None:
        return self.sessions.check(request.cookies.get(auth.COOKIE))

    def _reader(self, request: web.Request) -> auth.Session:
        """The logged-in session of a page view; a redirect to the login form otherwise."""
        session = self._session(request)
        if session is None:
            raise web.HTTPSeeOther("/console/login")
        return session

    async def _writer(self, request: web.Request) -> tuple[auth.Session, dict[str, str]]:
        """The session and form of an action: same origin, logged in, right CSRF token."""
        session = self._session(request)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if (
            session is None
            or not auth.same_origin(request)
            or not self.sessions.csrf_ok(session, form.get("csrf", ""))
        ):
            log.warning(
                "console: refused a %s %s (cross-site, no session or wrong CSRF token)",
                request.method,
                request.path,
            )
            raise web.HTTPForbidden(text=FORBIDDEN_TEXT)
        return session, form

    @staticmethod
    def _key(request: web.Request) -> SessionKey:
        key = request.match_info["key"]
        try:
            parse_key(key)
        except ValueError:
            raise web.HTTPNotFound(text=BAD_KEY_TEXT) from None
        return SessionKey(key)

    @staticmethod
    def _html(text: str) -> web.Response:
        return web.Response(text=text, content_type="text/html")

    # ------------------------------------------------------------------ login
    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        if self._session(request) is not None:
            raise web.HTTPSeeOther("/console")
        return self._html(pages.login("", self.sessions.token is not None))

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not auth.same_origin(request):
            raise web.HTTPForbidden(text=FORBIDDEN_TEXT)
        if not self.sessions.token_ok(str(form.get("token", ""))):
            log.warning("console: a login with a wrong token from %s", request.remote)
            response = self._html(pages.login(WRONG_TOKEN_TEXT, True))
            response.set_status(401)
            return response
        operator = auth.operator_name(str(form.get("operator", "")))
        _session, value = self.sessions.issue(operator)
        log.info("console: operator %s logged in from %s", operator, request.remote)
        response = web.HTTPSeeOther("/console")
        auth.set_cookie(request, response, value)
        raise response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session, _form = await self._writer(request)
        log.info("console: operator %s logged out", session.operator)
        response = web.HTTPSeeOther("/console/login")
        auth.clear_cookie(response)
        raise response

    async def _file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self._static:
            raise web.HTTPNotFound(text="no such file")
        return web.Response(body=self._static[name], content_type=STATIC_TYPES[name])

    # ------------------------------------------------------------------ views
    async def _list(self, request: web.Request) -> web.StreamResponse:
        session = self._reader(request)
        q = request.query
        filters = {k: q.get(k, "").strip() for k in ("platform", "channel", "user") if q.get(k, "").strip()}
        after = q.get("after", "")
        split: dict[str, tuple[str, str, str]] = {}

        def keep(entry: SessionEntry) -> bool:
            try:
                parts = parse_key(entry.key)
            except ValueError:
                split[entry.key] = (entry.platform, "", "")
                return not filters
            split[entry.key] = (parts.platform, parts.user, parts.channel)
            return all(
                {"platform": parts.platform, "channel": parts.channel, "user": parts.user}[k] == v
                for k, v in filters.items()
            )

        page = await self.gateway.store.list_page(after, PAGE, keep)
        running = {str(k): v for k, v in self.watchers.running.items()}
        pending = await queue.pending_counts(self.gateway.store, (e.key for e in page.entries))
        return self._html(
            pages.conversation_list(
                page.entries, running, pending, filters, after, page.next, page.scanned, split,
                operator=session.operator, csrf=self.sessions.csrf(session),
            )
        )  # fmt: skip

    async def _conversation(self, request: web.Request) -> web.StreamResponse:
        session = self._reader(request)
        key = self._key(request)
        status = await self.gateway.status(key)
        entry = status.entry
        asked = request.query.get("skip", "0")
        skip = int(asked) if asked.isdigit() else 0
        records = await self.gateway.store.tail(entry.session_id, skip + TRANSCRIPT_PAGE) if entry else []
        shown = (records[: len(records) - skip] if skip else records)[-TRANSCRIPT_PAGE:]
        url = pages.conversation_url(key)
        older = f"{url}?skip={skip + TRANSCRIPT_PAGE}" if len(records) == skip + TRANSCRIPT_PAGE else ""
        newer = f"{url}?skip={max(0, skip - TRANSCRIPT_PAGE)}" if skip else ""
        parts = parse_key(key)
        started = self.watchers.running.get(key)
        facts = [
            ("Platform", pages.esc(parts.platform)),
            ("User", pages.esc(parts.user)),
            (
                "Channel",
                pages.esc(parts.channel) + (f" thread {pages.esc(parts.thread)}" if parts.thread else ""),
            ),
            ("Session", pages.esc(entry.session_id) if entry else "none yet"),
            ("Session started", pages.when(entry.session_started_at) if entry else "-"),
            ("Last activity", pages.when(entry.last_interaction_at) if entry else "-"),
            ("Turns", str(entry.turns) if entry else "0"),
            ("Model", pages.esc(entry.model or "the agent's default") if entry else "the agent's default"),
            ("Waiting here", f"{status.waiting} message(s) queued in this process"),
            ("Running here", "since " + pages.when(started) if started is not None else "no"),
        ]
        try:
            models: Sequence[str] = self.gateway.router.settings(parts.agent).models
        except KeyError:
            models = ()
        inbox = queue.render(await self.gateway.store.inbox.items(key))
        notice = unquote(request.cookies.get(NOTICE_COOKIE, ""))
        response = self._html(
            pages.conversation(
                key, entry, facts, models, self.watchers.answer.get(key, ""), started is not None,
                pages.transcript(shown, older, newer), inbox,
                operator=session.operator, csrf=self.sessions.csrf(session), notice=notice,
            )
        )  # fmt: skip
        if notice:
            response.del_cookie(NOTICE_COOKIE, path=auth.PATH)
        return response

    async def _live(self, request: web.Request) -> web.StreamResponse:
        """The answer of `key` as this process produces it: `snapshot` (what is there
        already), `start`, `delta`, `end`, `outcome` events; a comment every 15 s."""
        if self._session(request) is None:
            raise web.HTTPUnauthorized(text="log in first")
        key = self._key(request)
        response = web.StreamResponse(
            headers={**auth.HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        watch = self.watchers.watch(key)
        try:
            await response.prepare(request)
            if key in self.watchers.running:
                await response.write(_event("snapshot", self.watchers.answer.get(key, "")))
            while True:
                try:
                    event = await asyncio.wait_for(watch.events.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                await response.write(_event(event.kind, event.text))
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the viewer left, or the server stops
        finally:
            self.watchers.unwatch(key, watch)
        return response

    async def _health(self, request: web.Request) -> web.StreamResponse:
        session = self._reader(request)
        body = await health.render(self.runtime, self.errors, self.watchers)
        return self._html(
            pages.layout("Health", body, operator=session.operator, csrf=self.sessions.csrf(session))
        )

    # ------------------------------------------------------------------ actions
    async def _act(self, request: web.Request) -> web.StreamResponse:
        session, form = await self._writer(request)
        key = self._key(request)
        action = request.match_info["action"]
        arg = form.get("model", "") if action == "model" else ""
        log.info(
            "console: operator %s asked %s%s for %s", session.operator, action, f" {arg}" if arg else "", key
        )
        if action == "stop":
            text = await self.gateway.stop_text(key)
        elif action == "notice":
            text = await self._notice(key, form.get("text", "").strip(), form.get("mode", "notice"))
        else:
            text = await self._command(key, action, arg)
        response = web.HTTPSeeOther(pages.conversation_url(key))
        response.set_cookie(
            NOTICE_COOKIE, quote(text[:500]), max_age=60, path=auth.PATH, httponly=True, samesite="Strict"
        )
        raise response

    async def _notice(self, key: SessionKey, text: str, mode: str) -> str:
        """The proactive send (core/door/proactive.py): `notice` says `text` as is; `prompt`
        lets the agent answer it."""
        if not text:
            return EMPTY_NOTICE_TEXT
        try:
            sent = await self.gateway.send(key, text[:MAX_NOTICE], "prompt" if mode == "prompt" else "notice")
        except Unreachable as exc:
            return f"{UNREACHABLE_TEXT} ({exc})"
        except Closed:
            return CLOSED_TEXT
        except StoreError as exc:
            log.error("console: a notice to %s was not sent: the store failed: %s", key, exc)
            return NOT_SENT_TEXT
        return SENT_TEXT if sent.mode == "notice" else PROMPTED_TEXT

    async def _command(self, key: SessionKey, name: str, arg: str) -> str:
        responder = FutureResponder()
        try:
            await self.gateway.command(key, name, arg, responder)
        except Closed:
            return CLOSED_TEXT
        try:
            reply = await asyncio.wait_for(asyncio.shield(responder.reply), ACTION_WAIT_S)
        except TimeoutError:
            return QUEUED_TEXT
        return reply.text


def _event(kind: str, text: str) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(text)}\n\n".encode()
