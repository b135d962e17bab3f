"""Earlier messages of a Slack thread or DM for a session's first turn, and Slack files.

`BackfillingResponder` is the `SlackResponder` of a message that also offers
`fetch_history` (core.model.HistorySource): the gateway calls it inside the turn lock
when the message starts a session. In a thread it reads `conversations.replies` (paged
from the thread's start, so the last `history_backfill` before the message are kept, and
the thread's root message before them when it would be cut off); in
a DM, `conversations.history`. A top-level channel message starts its own thread and has
no earlier messages to read. Missing scopes (`channels:history`, `groups:history`,
`im:history`) are logged with the fix, and the turn is answered without history.

`SlackFile` downloads a file's `url_private` with the bot token, read from the Web API
client when the download starts, so no token is copied into messages or logs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.inbound import ANSWERED_SUBTYPES, Identity, strip_mention
from bots.slack.reply import Poster, SlackResponder
from bots.slack.settings import SlackSettings
from core.model import ChatMessage, FileUnavailable
from core.turn import Write, fetch_url, stream_url

log = logging.getLogger("chatlane.slack")

HISTORY_HINT = (
    "give the app the channels:history, groups:history, im:history and mpim:history scopes "
    "(and invite it to the channel), or set slack.history_backfill = 0"
)
NOT_ON_SLACK = "it is not stored on Slack"
PAGE = 200
MAX_PAGES = 10
"""A thread is read from its start: at most this many pages of replies."""


class BackfillingResponder(SlackResponder):
    """A `SlackResponder` that can also read the conversation's earlier messages."""

    def __init__(
        self,
        poster: Poster,
        channel: str,
        ts: str,
        thread_ts: str | None,
        reaction: str,
        *,
        me: Identity,
        limit: int,
        in_thread: str | None,
        is_direct: bool,
        settings: SlackSettings | None = None,
        user: str = "",
        team: str | None = None,
        answer_ids: Sequence[str] = (),
    ) -> None:
        super().__init__(
            poster,
            channel,
            ts,
            thread_ts,
            reaction,
            settings=settings,
            user=user,
            team=team,
            is_direct=is_direct,
            answer_ids=answer_ids,
        )
        self.me = me
        self.limit = limit
        self.in_thread = in_thread
        """The thread the message was written in (None for a top-level message)."""
        self.is_direct = is_direct

    async def fetch_history(self) -> list[ChatMessage]:
        if self.limit <= 0 or (self.in_thread is None and not self.is_direct):
            return []
        client = self.poster.client
        try:
            if self.in_thread is not None:
                found = await self._replies(client, self.in_thread)
            else:
                page = await client.conversations_history(
                    channel=self.channel, latest=self.ts, inclusive=False, limit=self.limit
                )
                found = list(reversed(page.get("messages") or []))  # newest first
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            error = exc.response.get("error", "") if isinstance(exc, SlackApiError) else type(exc).__name__
            log.warning(
                "slack: cannot read earlier messages in %s (%s); answering without them: %s",
                self.channel,
                error,
                HISTORY_HINT,
            )
            return []
        earlier = [m for m in found if _before(m, self.ts) and _is_message(m)]
        earlier = _keep_root(earlier, self.limit, self.in_thread)
        names = await self._names(client, earlier)
        return [self._record(m, names) for m in earlier]

    async def _names(self, client: AsyncWebClient, messages: list[Mapping[str, Any]]) -> dict[str, str]:
        """Display names of the people in `messages` that carry no profile (`users.info`,
        which needs `users:read`; without it, or on any error, the user id stands in)."""
        wanted = {
            str(m["user"])
            for m in messages
            if isinstance(m.get("user"), str) and not isinstance(m.get("user_profile"), dict)
        }

        async def one(user: str) -> tuple[str, str]:
            try:
                found = await client.users_info(user=user)
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.debug("slack: no name for %s: %s", user, exc)
                return user, ""
            info = found.get("user") or {}
            profile = info.get("profile") or {}
            return user, str(
                profile.get("display_name") or profile.get("real_name") or info.get("name") or ""
            )

        return {user: name for user, name in await asyncio.gather(*(one(u) for u in sorted(wanted))) if name}

    async def _replies(self, client: AsyncWebClient, thread_ts: str) -> list[Mapping[str, Any]]:
        found: list[Mapping[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            options: dict[str, Any] = {"channel": self.channel, "ts": thread_ts, "latest": self.ts}
            if cursor:
                options["cursor"] = cursor
            page = await client.conversations_replies(inclusive=False, limit=PAGE, **options)
            found.extend(page.get("messages") or [])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                break
        return found

    def _record(self, m: Mapping[str, Any], names: Mapping[str, str]) -> ChatMessage:
        mine = m.get("user") == self.me.user_id or (
            m.get("bot_id") is not None and m.get("bot_id") == self.me.bot_id
        )
        text = strip_mention(str(m.get("text") or ""), self.me.user_id)
        files = [str(f.get("name")) for f in m.get("files") or [] if isinstance(f, dict) and f.get("name")]
        if files:
            text = " ".join([text, *(f"[attachment: {n}]" for n in files)]).strip()
        raw_profile = m.get("user_profile")
        profile: Mapping[str, Any] = raw_profile if isinstance(raw_profile, dict) else {}
        author = (
            str(profile.get("display_name") or profile.get("real_name") or "")
            or names.get(str(m.get("user")), "")
            or str(m.get("username") or "")
            or str(m.get("user") or m.get("bot_id") or "someone")
        )
        try:
            at = float(str(m.get("ts", "0")))
        except ValueError:
            at = 0.0
        return ChatMessage(
            role="assistant" if mine else "user",
            content=text,
            at=at,
            message_id=str(m.get("ts", "")),
            author=author,
            backfill=True,
        )


def _keep_root(
    messages: list[Mapping[str, Any]], limit: int, thread_ts: str | None
) -> list[Mapping[str, Any]]:
    """The last `limit` messages, and the thread's root (`thread_ts`) before them when it
    would be cut off: the root says what the thread is about. A DM has no root."""
    if len(messages) <= limit:
        return messages
    first = messages[0]
    root = [first] if thread_ts is not None and str(first.get("ts")) == thread_ts else []
    return root + messages[-limit:]


def _before(m: Mapping[str, Any], ts: str) -> bool:
    try:
        return float(str(m.get("ts", ""))) < float(ts)
    except ValueError:
        return False


def _is_message(m: Mapping[str, Any]) -> bool:
    subtype = str(m.get("subtype") or "")
    return (subtype in ANSWERED_SUBTYPES or subtype == "bot_message") and bool(
        m.get("text") or m.get("files")
    )


class SlackFile:
    """A file shared on a Slack message, read from `url_private` with the bot token."""

    def __init__(self, name: str, url: str, size: int | None, client: AsyncWebClient) -> None:
        self._name = name
        self.url = url
        self._size = size
        self._client = client

    @property
    def name(self) -> str:
        return self._name

    @property
    def declared_size(self) -> int | None:
        return self._size

    async def fetch(self, max_bytes: int) -> bytes:
        # No redirects: Slack answers a token it does not accept with a redirect to a login
        # page, which would otherwise be read as a text file.
        return await fetch_url(self.url, max_bytes=max_bytes, headers=self._headers(), redirects=0)

    async def fetch_to(self, write: Write, max_bytes: int) -> None:
        """`fetch`, chunk by chunk (a large file never sits in memory whole)."""
        await stream_url(self.url, write, max_bytes=max_bytes, headers=self._headers(), redirects=0)

    def _headers(self) -> dict[str, str]:
        if not token_may_go_to(self.url, self._client.base_url):
            log.warning(
                "slack: file %r is not on Slack (%s); not sending the bot token there",
                self._name,
                _host(self.url),
            )
            raise FileUnavailable(NOT_ON_SLACK)
        return {"Authorization": f"Bearer {self._client.token}"} if self._client.token else {}

    def __repr__(self) -> str:
        return f"SlackFile({self._name!r}, {self.url!r})"


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port with the scheme's default filled in); None if unparsable."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    default = {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port if port is not None else default


def token_may_go_to(url: str, api_base_url: str) -> bool:
    """Whether the bot token may be sent to a file URL: only over https to Slack itself
    (slack.com or a subdomain, port 443), or to exactly the configured Web API's origin
    (scheme, host and port: a proxy, the tests' fake). Never over plain http to Slack,
    never to another port on the API's host."""
    where = _origin(url)
    if where is None or not where[1]:
        return False
    if where == _origin(api_base_url):
        return True
    scheme, host, port = where
    return scheme == "https" and port == 443 and (host == "slack.com" or host.endswith(".slack.com"))


def files_of(files: Sequence[Mapping[str, Any]], client: AsyncWebClient) -> tuple[SlackFile, ...]:
    """The readable files of a message event (stubs without a URL are skipped)."""
    out: list[SlackFile] = []
    for f in files:
        if not isinstance(f, dict):
            continue
        url = f.get("url_private_download") or f.get("url_private")
        if not isinstance(url, str):
            continue
        size = f.get("size")
        out.append(
            SlackFile(str(f.get("name") or "file"), url, size if isinstance(size, int) else None, client)
        )
    return tuple(out)
