"""Slack payloads -> platform-neutral facts: an `Inbound` and the `Facts` gating needs.

Pure functions: no I/O, no Bolt objects.

Which Slack messages are people talking: plain messages, thread broadcasts, file
shares with text and (when `allow_bots`) other bots' messages. Edits, deletions,
joins and the other subtypes are housekeeping and never start a turn, nor do the
bot's own messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bots.slack.settings import SlackSettings
from core.door import Facts, RecentSet, Seen
from core.model import Inbound, ReplyTarget

PLATFORM = "slack"

ANSWERED_SUBTYPES = frozenset({"", "thread_broadcast", "file_share", "me_message"})


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


def place(channel: str, ts: str) -> str:
    """One message (or the thread rooted at it), whichever event carried it: an
    `app_mention` and its `message.channels` twin share it, and so does every redelivery."""
    return f"{channel}:{ts}"


def strip_mention(text: str, bot_user_id: str) -> str:
    """`text` without `<@BOT>` / `<@BOT|name>` mentions of the bot, trimmed."""
    cleaned = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()


def parse_message(event: Mapping[str, Any], me: Identity, *, via_mention: bool = False) -> SlackMessage | str:
    """The message in a `message` / `app_mention` event, or why it is not one to answer."""
    subtype = str(event.get("subtype") or "")
    bot_id = event.get("bot_id")
    user = event.get("user")
    if user == me.user_id or (bot_id is not None and bot_id == me.bot_id):
        return "the bot's own message"
    author_is_bot = bool(bot_id) or subtype == "bot_message"
    if subtype not in ANSWERED_SUBTYPES and subtype != "bot_message":
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


def read_message(
    event: Mapping[str, Any],
    me: Identity,
    settings: SlackSettings,
    threads: RecentSet,
    *,
    via_mention: bool = False,
) -> Seen | str:
    """A `message` / `app_mention` event translated, or why it is not one to answer.

    A reply in one of the bot's `threads` counts as addressed to the bot when
    `thread_replies_addressed`.
    """
    msg = parse_message(event, me, via_mention=via_mention)
    if isinstance(msg, str):
        return msg
    in_known_thread = msg.thread_ts is not None and place(msg.channel, msg.thread_ts) in threads
    inbound = Inbound(
        platform=PLATFORM,
        user=msg.user,
        channel=msg.channel,
        text=msg.text,
        message_id=msg.ts,
        thread=conversation_thread(msg, settings.reply_in_thread),
        is_direct=msg.is_direct,
        mentioned_bot=msg.mentioned,
        space=msg.team or me.team_id or None,
    )
    facts = Facts(
        user=msg.user,
        channel=msg.channel,
        is_direct=msg.is_direct,
        mentioned_bot=msg.mentioned or (settings.thread_replies_addressed and in_known_thread),
        author_is_bot=msg.author_is_bot,
        space=msg.team,
    )
    return Seen(inbound, facts)


def read_command(command: Mapping[str, Any]) -> Seen:
    """A slash command's caller: a command is always addressed to the bot; its text (as
    written, trimmed) is the action and its argument."""
    user, channel = str(command.get("user_id", "")), str(command.get("channel_id", ""))
    action = str(command.get("text", "")).strip()
    is_direct = channel.startswith("D")
    team = command.get("team_id")
    space = str(team) if team else None
    inbound = Inbound(PLATFORM, user, channel, action, "", None, is_direct, True, space=space)
    return Seen(inbound, Facts(user, channel, is_direct, mentioned_bot=True, space=command.get("team_id")))


def reply_target(inbound: Inbound, team: str | None) -> ReplyTarget:
    """Where the answer to a message goes, in a form any process can store: its channel,
    the thread the bot answers in (`thread_ts`), the message (`reply_to` = its ts), and in
    `extra` the workspace, the asker (native streams name their recipient) and whether it
    is a DM."""
    extra = {"user": inbound.user}
    if team:
        extra["team"] = team
    if inbound.is_direct:
        extra["direct"] = "1"
    return ReplyTarget(
        PLATFORM, inbound.channel, inbound.thread, inbound.message_id, extra=tuple(sorted(extra.items()))
    )


def is_thread_reply(inbound: Inbound) -> bool:
    """Whether the message was written in an existing thread (not one the bot roots at it)."""
    return inbound.thread is not None and inbound.thread != inbound.message_id
