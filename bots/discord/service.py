"""The Discord adapter (discord.py), enabled by `[discord] enabled = true`.

A thin translator: each gateway message becomes a `Seen` (its `Inbound` and access
facts, bots/discord/inbound.py), is gated once (`refusal`, core/access.py),
de-duplicated (a gateway RESUME can replay a MESSAGE_CREATE) and handed to the gateway
with a `DiscordResponder` (bots/discord/reply.py), which turns the `Reply` into Discord
messages, and its `ReplyTarget`, which the durable inbox stores with it. While the client
runs, `gateway.targets` turns a stored target back into a responder (bots/discord/
targets.py): that is how a message accepted before a restart is answered after it.
Slash commands live in bots/discord/commands.py and are gated the same way.

Ordering belongs to the core: `on_message` does not await anything before
`gateway.submit`, so messages reach their lanes in the order Discord sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from bots.discord.commands import build_tree, sync_commands
from bots.discord.history import BackfillingResponder
from bots.discord.inbound import ANSWERED_TYPES, PLATFORM, read_message, reply_target
from bots.discord.reply import ALLOWED_MENTIONS
from bots.discord.settings import DiscordSettings
from bots.discord.targets import Targets
from bots.runtime import Runtime, StartupError
from core.door import Facts, admit
from core.model import Closed, Inbound
from core.ops import TaskSet

log = logging.getLogger("chatlane.discord")

RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 60.0
FATAL_CLOSE_CODES = frozenset({4004, 4010, 4011, 4012, 4013, 4014})
"""Gateway closes a retry cannot fix: bad token, shard or intent settings."""


def intents() -> discord.Intents:
    """Guilds (channels, threads), guild and DM messages, and their content.

    Message content is a privileged intent: it must be switched on in the developer
    portal, or Discord closes the gateway with 4014 (a clear StartupError here).
    """
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


class DiscordService:
    """One discord.py client (sharded when configured) feeding the shared gateway."""

    name = "discord"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.loaded.section(DiscordSettings)
        self.client: discord.Client | None = None
        self._connection: asyncio.Task[None] | None = None
        self._tasks = TaskSet("discord")
        self._saved_endpoints: tuple[str, yarl.URL] | None = None
        self._stopping = False

    async def ready(self) -> str | None:
        """For /readyz: None while connected to the gateway (READY seen, not closed)."""
        client = self.client
        if client is None or client.is_closed() or not client.is_ready():
            return "not connected to the Discord gateway"
        return None

    def describe(self) -> str:
        user = self.client.user if self.client is not None else None
        who = f"as {user} ({user.id})" if user is not None else "not connected"
        shards = f", shards {self.settings.shard_ids or 'all'} of {self.settings.shard_count}"
        return f"{who} via {self.settings.gateway_url}" + (shards if self.settings.shard_count else "")

    async def start(self) -> None:
        secret = self.runtime.loaded.secrets.get(self.settings.token_env)
        token = secret.get_secret_value().strip() if secret is not None else ""
        if not token:
            raise StartupError(
                f"discord: no bot token: set the environment variable {self.settings.token_env} "
                "(named by discord.token_env) to the token from the developer portal's Bot tab"
            )
        self._use_endpoints()
        client = self.client = self._build_client()
        tree = build_tree(client, self.runtime, self.refusal)
        try:
            await client.login(token)
        except discord.LoginFailure as exc:
            await self.stop()
            raise StartupError(
                f"discord: Discord rejected the bot token in {self.settings.token_env} (401 Unauthorized); "
                "copy it again from the developer portal's Bot tab"
            ) from exc
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            await self.stop()
            raise StartupError(
                f"discord: cannot log in through {self.settings.api_base_url}: {type(exc).__name__}: {exc}"
            ) from exc
        self._connection = asyncio.create_task(self._stay_connected(client), name="discord gateway")
        if self.settings.sync_commands:
            self._tasks.spawn(sync_commands(tree), name="discord command sync")
        await self._wait_ready(client, self._connection)
        self._connection.add_done_callback(self._on_connection_end)
        self.runtime.gateway.targets.register(
            PLATFORM, Targets(client, self.settings).responder, admits=self.still_admits
        )

    async def stop(self) -> None:
        self._stopping = True
        self.runtime.gateway.targets.unregister(PLATFORM)
        await self._tasks.close()
        await self._close_client()
        if self._connection is not None:
            await asyncio.gather(self._connection, return_exceptions=True)
        self._restore_endpoints()

    # ------------------------------------------------------------------ events
    async def on_message(self, message: discord.Message) -> None:
        me = self.client.user if self.client is not None else None
        if me is None or message.author.id == me.id or message.type not in ANSWERED_TYPES:
            return
        if message.edited_at is not None:
            # discord.py runs this handler as a task and edits its cached Message in place:
            # an edit that arrived first has replaced what was sent, and answering (or
            # gating) the edited text would let an edit add a mention after the fact.
            log.info("discord: message %s was edited before it was handled; not answered", message.id)
            return
        seen = read_message(message, me, self.settings)
        inbound = seen.inbound
        if (why := self.refusal(seen.facts)) is not None:
            log.debug("discord: not answering message %s in %s: %s", message.id, inbound.channel, why)
            return
        if not inbound.text and not inbound.attachments:
            log.debug("discord: message %s has no text or files to answer", message.id)
            return
        # A RESUME (or a shard moved to another process) can deliver a message again:
        # the gateway answers its id once across every process on the store.
        delivery = [("replay", f"message:{inbound.message_id}")]
        try:
            await self.runtime.gateway.submit(
                inbound,
                BackfillingResponder(message, self.settings, me),
                delivery=delivery,
                target=reply_target(message),
            )
        except Closed:
            log.info("discord: shutting down; message %s not taken", message.id)

    def refusal(self, facts: Facts) -> str | None:
        """Why the bot must not answer (for the log), or None when it may: the one gate."""
        s = self.settings
        return admit(s, facts, allow_spaces=s.allow_guilds, allow_roles=s.allow_roles)

    def still_admits(self, inbound: Inbound) -> bool:
        """The gate again, for a stored message about to be resumed: the access rules of
        now (allowlists, DM policy, guilds, roles). Whether it addressed the bot was decided
        when it arrived and is not asked again."""
        facts = Facts(
            inbound.user,
            inbound.channel,
            inbound.is_direct,
            mentioned_bot=True,
            parent_channel=inbound.parent_channel,
            space=inbound.space,
            roles=inbound.roles,
        )
        if (why := self.refusal(facts)) is not None:
            log.info("discord: message %s is not answered after all: %s", inbound.message_id, why)
            return False
        return True

    async def on_error(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        # discord.py calls this from inside the `except` of a failed handler.
        log.exception("discord: the %s handler failed; the bot keeps running", event)

    # ---------------------------------------------------------------- plumbing
    def _build_client(self) -> discord.Client:
        s = self.settings
        options: dict[str, Any] = {
            "intents": intents(),
            "guild_ready_timeout": s.guild_ready_timeout_s,
            # Members are never needed (a message carries its author's roles); chunking
            # would need the privileged members intent and delay readiness.
            "chunk_guilds_at_startup": False,
            "max_ratelimit_timeout": s.max_ratelimit_wait_s,
            "allowed_mentions": ALLOWED_MENTIONS,
        }
        # chatlane never joins voice: the "PyNaCl/davey is not installed" warnings would only mislead.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        client: discord.Client
        if s.shard_count is not None:
            if s.shard_ids is not None:
                options["shard_ids"] = list(s.shard_ids)
            client = discord.AutoShardedClient(shard_count=s.shard_count, **options)
        else:
            client = discord.Client(**options)

        async def on_message(message: discord.Message) -> None:
            await self.on_message(message)

        async def on_error(event: str, /, *args: Any, **kwargs: Any) -> None:
            await self.on_error(event, *args, **kwargs)

        client.event(on_message)
        client.event(on_error)
        return client

    def _use_endpoints(self) -> None:
        """Point discord.py at the configured REST base and gateway (proxies, tests).

        discord.py keeps both as class attributes, so they are process-wide: one
        Discord bot per process, which is also how sharded deployments run.
        """
        base = self.settings.api_base_url.rstrip("/")
        gateway = yarl.URL(self.settings.gateway_url)
        if not base.startswith(("https://", "http://")):
            raise StartupError(f"discord.api_base_url must be an http(s) URL, got {base!r}")
        if gateway.scheme not in ("wss", "ws"):
            raise StartupError(f"discord.gateway_url must be a ws(s) URL, got {self.settings.gateway_url!r}")
        if self._saved_endpoints is None:
            self._saved_endpoints = (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            )
        discord.http.Route.BASE = base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway

    def _restore_endpoints(self) -> None:
        if self._saved_endpoints is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved_endpoints
            self._saved_endpoints = None

    async def _wait_ready(self, client: discord.Client, connection: asyncio.Task[None]) -> None:
        """Return once the gateway is ready; raise StartupError if the connection dies first."""
        ready = asyncio.create_task(client.wait_until_ready(), name="discord ready")
        done, _ = await asyncio.wait(
            {connection, ready}, timeout=self.settings.ready_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if ready in done:
            return
        ready.cancel()
        await asyncio.gather(ready, return_exceptions=True)
        if connection not in done:
            log.warning(
                "discord: not ready after %.0fs; still connecting to %s in the background",
                self.settings.ready_timeout_s,
                self.settings.gateway_url,
            )
            return
        exc = None if connection.cancelled() else connection.exception()
        await self.stop()
        raise StartupError(_connection_problem(exc)) from exc

    async def _stay_connected(self, client: discord.Client) -> None:
        """`client.connect()`, started again after an error it does not recover from itself.

        discord.py reconnects on network errors, but an exception from its own payload
        parsing (a malformed event from a gateway proxy, say) ends `connect()`: one bad
        event must not silence the bot. Refusals that a retry cannot fix (a bad token,
        a missing privileged intent) still end it, with the clear message.
        """
        delay = RECONNECT_FIRST_S
        while True:
            started = time.monotonic()
            try:
                await client.connect(reconnect=True)
                return  # closed by stop()
            except (discord.PrivilegedIntentsRequired, discord.LoginFailure):
                raise
            except discord.ConnectionClosed as exc:
                if exc.code in FATAL_CLOSE_CODES:
                    raise
                problem: BaseException = exc
            except Exception as exc:
                problem = exc
            await _drop_socket(client)
            if self._stopping or client.is_closed():
                return
            if time.monotonic() - started > RECONNECT_MAX_S:
                delay = RECONNECT_FIRST_S  # it had been up for a while: start over
            log.error(
                "discord: the gateway connection failed (%s); reconnecting in %.1fs",
                _connection_problem(problem),
                delay,
                exc_info=problem,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _on_connection_end(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        log.error("discord: the gateway connection ended for good: %s", _connection_problem(task.exception()))

    async def _close_client(self) -> None:
        if self.client is not None and not self.client.is_closed():
            await self.client.close()


async def _drop_socket(client: discord.Client) -> None:
    """Close the websocket of a `connect()` that raised: discord.py leaves it open, and its
    heartbeat thread would keep a dead gateway session alive (and outlive the loop)."""
    ws = getattr(client, "ws", None)
    if ws is not None:
        with contextlib.suppress(Exception):
            await ws.close(code=4000)


def _connection_problem(exc: BaseException | None) -> str:
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return (
            "discord: Discord refused the Message Content intent: switch on 'Message Content Intent' "
            "in the developer portal's Bot tab"
        )
    if isinstance(exc, discord.ConnectionClosed):
        return f"discord: the gateway closed the connection (code {exc.code}: {exc.reason or 'no reason'})"
    if exc is None:
        return "discord: the gateway connection stopped before it was ready"
    return f"discord: the gateway connection failed: {type(exc).__name__}: {exc}"


def create(runtime: Runtime) -> DiscordService:
    return DiscordService(runtime)
