"""Slack event payloads -> platform-free facts. Pure functions: no I/O, no Bolt objects.

Which Slack messages are people talking: plain messages, thread broadcasts, file
shares with text and (when `allow_bots`) other bots' messages. Edits, deletions,
joins and the other subtypes are housekeeping and never start a turn, nor do the
bot's own messages.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PERSON_SUBTYPES = frozenset({"", "thread_broadcast", "file_share", "me_message"})


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the bot is in its workspace (from `auth.test`)."""

    user_id: str
    bot_id: str
    team_id: str


@dataclass(frozen=True, slots=True)
class SlackMessage:
    user: str
    channel: str
    ts: str
    thread_ts: str | None
    text: str
    """With the bot's own mention removed."""
    is_direct: bool
    mentioned: bool
    author_is_bot: bool
    team: str | None
    files: tuple[Mapping[str, Any], ...] = ()
    """The event's file objects (read during the turn; see bots/slack/history.py)."""

    @property
    def identity(self) -> str:
        """One message, whichever event carried it: an `app_mention` and its
        `message.channels` twin share it, and so does every redelivery."""
        return f"{self.channel}:{self.ts}"


def strip_mention(text: str, bot_user_id: str) -> str:
    """`text` without `<@BOT>` / `<@BOT|name>` mentions of the bot, trimmed."""
    cleaned = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()


def read_message(event: Mapping[str, Any], me: Identity, *, via_mention: bool = False) -> SlackMessage | str:
    """The message in a `message` / `app_mention` event, or why it is not one to answer."""
    subtype = str(event.get("subtype") or "")
    bot_id = event.get("bot_id")
    user = event.get("user")
    if user == me.user_id or (bot_id is not None and bot_id == me.bot_id):
        return "the bot's own message"
    author_is_bot = bool(bot_id) or subtype == "bot_message"
    if subtype not in PERSON_SUBTYPES and subtype != "bot_message":
        return f"subtype {subtype!r} is not a message from someone"
    sender = user or bot_id
    channel, ts = event.get("channel"), event.get("ts")
    if not (isinstance(sender, str) and isinstance(channel, str) and isinstance(ts, str)):
        return "no user, channel or ts"
    raw = event.get("text")
    if not isinstance(raw, str):
        return "text is missing or not a string"
    text = strip_mention(raw, me.user_id)
    files = tuple(f for f in event.get("files") or () if isinstance(f, dict))
    if not text and not files:
        return "no text"
    thread_ts = event.get("thread_ts")
    is_direct = event.get("channel_type") == "im" or channel.startswith("D")
    return SlackMessage(
        user=sender,
        channel=channel,
        ts=ts,
        thread_ts=thread_ts if isinstance(thread_ts, str) and thread_ts != ts else None,
        text=text,
        is_direct=is_direct,
        mentioned=via_mention or f"<@{me.user_id}" in raw,
        author_is_bot=author_is_bot,
        team=event.get("team") if isinstance(event.get("team"), str) else None,
        files=files,
    )


def conversation_thread(msg: SlackMessage, reply_in_thread: bool) -> str | None:
    """The thread the bot answers in, which is also the conversation's thread id.

    A reply in a thread stays there. A top-level channel message, answered in a
    thread, starts one rooted at itself, so the root and its replies share a session.
    A top-level DM is answered in the DM itself.
    """
    if msg.thread_ts is not None:
        return msg.thread_ts
    if reply_in_thread and not msg.is_direct:
        return msg.ts
    return None


class RecentThreads:
    """Threads the bot takes part in (bounded; the oldest are forgotten first)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._threads: OrderedDict[str, None] = OrderedDict()

    def add(self, channel: str, thread_ts: str) -> None:
        key = f"{channel}:{thread_ts}"
        self._threads[key] = None
        self._threads.move_to_end(key)
        if len(self._threads) > self.capacity:
            self._threads.popitem(last=False)

    def __contains__(self, item: tuple[str, str]) -> bool:
        return f"{item[0]}:{item[1]}" in self._threads
