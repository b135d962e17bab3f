"""Slack adapter on slack-bolt: Socket Mode (default) or the HTTP Events API.

Events -> `Seen` (the `Inbound` and its access facts, bots/slack/inbound.py) -> one
gate (`refusal`, core/access.py) -> `gateway.submit`. Bolt runs each listener before
it acks (`process_before_response`), and the listeners only do synchronous work (read
the event, gate it, drop duplicates) before handing the submit to a task this service
owns; the ack then waits for that submit, which returns once the message is stored in
the durable inbox (so an acked message survives a crash), but never longer than
`ACK_WAIT_S`: Slack redelivers what is not acked within 3 s, and a redelivery is
answered once anyway. The turn itself never holds the ack.

What is answered: `app_mention` in channels, every DM (`message.im`), channel
messages without a mention when `require_mention = false`, and replies in a thread
the bot takes part in when `thread_replies_addressed`. A mention arrives twice (as
`app_mention` and as `message.channels`) and Slack redelivers events it thinks were
not acked (HTTP retries, Socket Mode reconnects), possibly to another replica: one
message gives one turn, by its `event_id` and its channel and ts, checked by the
gateway in the store that every replica shares (core/door/dedupe.py).

Conversations: user + channel, and with `session.threads` each thread on its own. A
top-level mention answered in a thread starts a conversation keyed by its own ts, so
the root and the thread's replies share one session.

Each message goes to the gateway with its `ReplyTarget` (channel, thread_ts, its ts),
which the durable inbox stores; while connected, `gateway.targets` turns a stored target
back into a responder (bots/slack/targets.py), so a message accepted before a restart
is answered after it, in its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped, warning_token_skipped
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bots.runtime import Runtime, StartupError
from bots.slack import approvals
from bots.slack.history import BackfillingResponder, files_of
from bots.slack.inbound import (
    PLATFORM,
    Identity,
    is_thread_reply,
    place,
    read_command,
    read_message,
    reply_target,
)
from bots.slack.reply import Poster
from bots.slack.settings import SlackSettings
from bots.slack.targets import Targets
from core.door import NOT_HERE_TEXT, Delivery, Facts, RecentSet, admit
from core.model import Closed, Inbound, ReplyTarget, StoreError
from core.ops import TaskSet
from core.turn import APPROVAL_ACTION_PREFIX

log = logging.getLogger("chatlane.slack")

SEEN_CAPACITY = 10_000
"""Threads remembered as ones the bot takes part in (the store is asked for the others)."""
ACK_WAIT_S = 2.0
"""An event's ack waits this long at most for the message to be stored durably."""


class SlackService:
    """One Slack workspace app. See the module docstring for what it answers."""

    name = "slack"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.loaded.section(SlackSettings)
        self.me = Identity("", "", "")
        self.url = ""
        """http mode: where the Events API endpoint listens, once started."""
        self._threads = RecentSet(SEEN_CAPACITY)
        """Threads the bot takes part in (`place(channel, thread_ts)`)."""
        self._tasks = TaskSet("slack")
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._poster: Poster | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        bot_token = self._secret("bot_token_env", s.bot_token_env, "xoxb-", "bot token")
        app_token = (
            self._secret("app_token_env", s.app_token_env, "xapp-", "app-level token")
            if s.mode == "socket"
            else ""
        )
        signing_secret = (
            self._secret("signing_secret_env", s.signing_secret_env, "", "signing secret")
            if s.mode == "http"
            else ""
        )
        try:
            await self._connect(bot_token, app_token, signing_secret)
        except BaseException:
            await self.stop()
            raise

    async def _connect(self, bot_token: str, app_token: str, signing_secret: str) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession()
        self._client = AsyncWebClient(
            token=bot_token,
            base_url=s.api_base_url,
            session=self._session,
            logger=logging.getLogger("chatlane.slack.web"),
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            ],
        )
        self._poster = Poster(self._client)
        self.me, granted = await self._fetch_identity(self._client)
        targets = Targets(lambda: self._poster, self.me, self.settings)
        self.runtime.gateway.targets.register(PLATFORM, targets.responder, admits=self.still_admits)
        bolt_log = logging.getLogger("chatlane.slack.bolt")
        with _quiet_token_warning(bolt_log):
            app = AsyncApp(
                client=self._client,
                # From the auth.test above, not one per event: Bolt's own authorisation
                # awaited auth.test for each of the first events at once, and whichever
                # answer came first let its message overtake those sent before it.
                authorize=_authorized_as(granted),
                signing_secret=signing_secret,
                process_before_response=True,
                request_verification_enabled=s.mode == "http",
                logger=bolt_log,
            )
        app.event("app_mention")(self._on_app_mention)
        app.event("message")(self._on_message)
        app.action(re.compile(f"^{re.escape(APPROVAL_ACTION_PREFIX)}:"))(self._on_approval)
        if s.slash_command:
            app.command(s.slash_command)(self._on_command)
        app.error(self._on_error)
        if s.mode == "socket":
            # Our client carries api_base_url, so apps.connections.open goes there too.
            self._socket = AsyncSocketModeHandler(
                app, app_token, logger=logging.getLogger("chatlane.slack.socket"), web_client=self._client
            )
            try:
                await self._socket.connect_async()  # type: ignore[no-untyped-call]  # untyped in Bolt
            except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise StartupError(
                    f"slack: cannot open Socket Mode via {s.api_base_url}: {_why(exc)}"
                ) from None
            return
        self._runner = web.AppRunner(app.web_app(path=s.path, port=s.port), access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, s.host, s.port).start()
        except OSError as exc:
            raise StartupError(f"slack: cannot listen on {s.host}:{s.port} (slack.port): {exc}") from None
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}{s.path}"

    async def _fetch_identity(self, client: AsyncWebClient) -> tuple[Identity, AuthorizeResult]:
        """Who the bot is, and that as Bolt's authorisation of every event."""
        try:
            who = await client.auth_test()
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise StartupError(
                f"slack: auth.test via {self.settings.api_base_url} failed: {_why(exc)}"
                f" (check the token in {self.settings.bot_token_env})"
            ) from None
        except (AttributeError, TypeError, ValueError):
            # slack_sdk fails inside its own response check when the body is not a JSON
            # object (a proxy's error page, a wrong api_base_url): say that, in one line.
            raise StartupError(
                f"slack: auth.test via {self.settings.api_base_url} did not answer with Slack's JSON "
                "(is slack.api_base_url right, e.g. https://slack.com/api/ ?)"
            ) from None
        me = Identity(str(who.get("user_id", "")), str(who.get("bot_id", "")), str(who.get("team_id", "")))
        return me, AuthorizeResult.from_auth_test_response(bot_token=client.token, auth_test_response=who)

    def _secret(self, key: str, env_var: str, prefix: str, what: str) -> str:
        secret = self.runtime.loaded.secrets.get(env_var)
        value = secret.get_secret_value() if secret is not None else ""
        if not value:
            raise StartupError(
                f"slack: the {what} is missing: set the environment variable {env_var or '(unnamed)'}"
                f" (named by [slack] {key})"
            )
        if prefix and not value.startswith(prefix):
            raise StartupError(f"slack: the {what} in {env_var} must start with {prefix!r}")
        return str(value)

    async def stop(self) -> None:
        self.runtime.gateway.targets.unregister(PLATFORM)
        self._poster = None  # take no more messages
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._tasks.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ready(self) -> str | None:
        """For /readyz: None once Slack can reach this bot (Socket Mode connected, or the
        Events API listening); else why not."""
        if self._socket is not None:
            connected = await self._socket.client.is_connected()
            return None if connected else "Socket Mode not connected"
        return None if self._runner is not None else "not listening"

    def describe(self) -> str:
        if self.settings.mode == "socket":
            return f"Socket Mode as {self.me.user_id or '?'} (Web API {self.settings.api_base_url})"
        return f"Events API on {self.url or self.settings.path} as {self.me.user_id or '?'}"

    # ------------------------------------------------------------------ events
    async def _on_app_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._stored(self._take(event, via_mention=True, event_id=str(body.get("event_id") or "")))

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._stored(self._take(event, via_mention=False, event_id=str(body.get("event_id") or "")))

    @staticmethod
    async def _stored(submit: asyncio.Task[None] | None) -> None:
        """Hold the ack until the message is in the durable inbox (at most `ACK_WAIT_S`)."""
        if submit is not None:
            await asyncio.wait({submit}, timeout=ACK_WAIT_S)

    def _take(
        self, event: dict[str, Any], *, via_mention: bool, event_id: str = ""
    ) -> asyncio.Task[None] | None:
        """Gate one message event; synchronous up to the hand-off, so a duplicate is dropped
        before the ack and messages reach the gateway in the order Slack sent them. The
        submit's task, if one was started."""
        seen = read_message(event, self.me, self.settings, self._threads, via_mention=via_mention)
        if isinstance(seen, str):
            log.debug("slack: ignored event in %s: %s", event.get("channel"), seen)
            return None
        inbound = seen.inbound
        if event.get("files") and self._client is not None:
            files = [f for f in event["files"] if isinstance(f, dict)]
            inbound = dataclasses.replace(inbound, attachments=files_of(files, self._client))
        reason = self.refusal(seen.facts)
        if reason is None:
            return self._accept(inbound, event_id)
        if (
            is_thread_reply(inbound)
            and self.settings.thread_replies_addressed
            and self.refusal(dataclasses.replace(seen.facts, mentioned_bot=True)) is None
        ):
            # Not known here (e.g. after a restart): the store knows whether this is one of ours.
            return self._tasks.spawn(
                self._accept_if_known_thread(inbound, event_id), name=f"slack thread {inbound.thread}"
            )
        log.debug("slack: not answering %s in %s: %s", inbound.message_id, inbound.channel, reason)
        return None

    def refusal(self, facts: Facts) -> str | None:
        """Why the bot must not answer (for the log), or None when it may: the one gate."""
        return admit(self.settings, facts)

    def still_admits(self, inbound: Inbound) -> bool:
        """The gate again, for a stored message about to be resumed: the access rules of now
        (allowlists, DM policy). Whether it addressed the bot was decided when it arrived."""
        facts = Facts(inbound.user, inbound.channel, inbound.is_direct, True, space=inbound.space)
        if (why := self.refusal(facts)) is not None:
            log.info("slack: message %s is not answered after all: %s", inbound.message_id, why)
            return False
        return True

    def _accept(self, inbound: Inbound, event_id: str) -> asyncio.Task[None] | None:
        ts, channel = inbound.message_id, inbound.channel
        if self._poster is None:  # stopped
            return None
        if inbound.thread is not None and not inbound.is_direct:
            self._threads.add(place(channel, inbound.thread))
        responder = BackfillingResponder(
            self._poster,
            channel,
            ts,
            inbound.thread,
            self.settings.ack_reaction,
            me=self.me,
            limit=self.settings.history_backfill,
            in_thread=inbound.thread if is_thread_reply(inbound) else None,
            settings=self.settings,
            user=inbound.user,
            team=self.me.team_id or None,  # native streams in channels name the recipient's team
            is_direct=inbound.is_direct,
        )
        # The message's own id comes last: all copies of it share that one (see Deliveries).
        delivery = [("retry", f"event:{event_id}")] if event_id else []
        delivery.append(("twin", f"message:{place(channel, ts)}"))
        target = reply_target(inbound, self.me.team_id or None)
        return self._tasks.spawn(
            self._submit(inbound, responder, delivery, target), name=f"slack message {ts}"
        )

    async def _accept_if_known_thread(self, inbound: Inbound, event_id: str) -> None:
        session = self.runtime.loaded.config.session
        if not session.threads or session.scope == "user":
            return  # the key would not name the thread
        try:
            gateway = self.runtime.gateway
            known = (await gateway.status(gateway.key_for(inbound))).entry is not None
        except (ValueError, StoreError) as exc:
            log.warning("slack: cannot tell whether thread %s is ours: %s", inbound.thread, exc)
            return
        if known and (submit := self._accept(inbound, event_id)) is not None:
            await submit

    async def _submit(
        self, inbound: Inbound, responder: BackfillingResponder, delivery: list[Delivery], target: ReplyTarget
    ) -> None:
        try:
            await self.runtime.gateway.submit(inbound, responder, delivery=delivery, target=target)
        except ValueError as exc:
            log.warning("slack: message %s not taken: %s", inbound.message_id, exc)
        except Closed:
            log.info("slack: message %s arrived during shutdown; not answered", inbound.message_id)

    # ------------------------------------------------------------ slash command
    async def _on_approval(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        if self._client is not None:
            await approvals.on_click(ack, body, self._client, self.runtime.gateway)

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        """`/chatlane NAME [ARG]`: a conversation command (core/door/commands.py) for the
        conversation outside threads here (a slash command does not say its thread)."""
        seen = read_command(command)
        inbound = seen.inbound
        words = inbound.text.split(maxsplit=1)  # the argument (a model name) keeps its case
        prefix = self.settings.slash_command
        if (reason := self.refusal(seen.facts)) is not None:
            log.info("slack: %s from %s in %s refused: %s", prefix, inbound.user, inbound.channel, reason)
            await ack(text=NOT_HERE_TEXT)
            return
        commands = self.runtime.gateway.commands
        if (found := commands.get(words[0]) if words else None) is None:
            await ack(text=commands.usage(prefix))
            return
        try:
            key = self.runtime.gateway.key_for(inbound)
        except ValueError as exc:
            log.error("slack: %s %s: no conversation key: %s", prefix, found.name, exc)
            await ack(text=found.failed_text)
            return
        arg = words[1] if len(words) > 1 else ""
        answer = await commands.answer(key, found.name, arg, outside_threads=True)
        await ack(text=answer.text)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("slack: listener failed on %s", body.get("event_id") or body.get("command"), exc_info=error)


def _why(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        data = getattr(exc.response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        status = getattr(exc.response, "status_code", None) or getattr(exc.response, "status", "?")
        return str(error or f"not a Slack API answer (HTTP {status})")
    return f"{type(exc).__name__}: {exc}"


def create(runtime: Runtime) -> SlackService:
    return SlackService(runtime)


class _DropTokenSkipped(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in (
            warning_client_prioritized_and_token_skipped(),
            warning_token_skipped(),
        )


def _authorized_as(granted: AuthorizeResult) -> Callable[..., Awaitable[AuthorizeResult]]:
    """Bolt's `authorize`: the start's auth.test result, with the event's own user. It
    never suspends, so events reach the listeners in the order the socket read them."""

    async def authorize(user_id: str | None) -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=granted.enterprise_id,
            team_id=granted.team_id,
            team=granted.team,
            url=granted.url,
            bot_user_id=granted.bot_user_id,
            bot_id=granted.bot_id,
            bot_token=granted.bot_token,
            bot_scopes=granted.bot_scopes,
            user_id=user_id,
        )

    return authorize


@contextlib.contextmanager
def _quiet_token_warning(logger: logging.Logger) -> Iterator[None]:
    """Building the app without Bolt's "`token` will be unused" warning.

    Why it came on every start: AsyncApp reads `SLACK_BOT_TOKEN` from the environment
    whenever no `token` is passed (`token or os.environ.get(...)`), and the documented
    setup exports exactly that variable; given a `client` too (ours carries
    `api_base_url` and the retry handlers), it then warns that the token is unused. The
    token it would use IS the client's (ours), so the warning says nothing true; no
    argument turns the environment read off. Given `authorize` too, it says the token
    "will be ignored": the token `authorize` hands back is again the client's. Only
    those two messages of Bolt's own (its constants, not texts of ours) are dropped,
    only while the app is built."""
    quiet = _DropTokenSkipped()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
