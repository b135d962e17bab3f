"""discord.py objects -> platform-neutral facts: an `Inbound` and the `Facts` gating needs.

Nothing here awaits: the adapter must hand messages to the gateway in the order the
gateway delivered them, and discord.py runs each event as its own task, so any await
before `gateway.submit` could let a later message overtake an earlier one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import discord

from bots.discord.settings import DiscordSettings
from core.door import Facts, Seen
from core.model import Inbound, ReplyTarget
from core.turn import UrlSource

PLATFORM = "discord"

ANSWERED_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
"""Messages people write; joins, pins, thread-created notices and the like are not."""


def read_message(message: discord.Message, me: discord.ClientUser, settings: DiscordSettings) -> Seen:
    """The `Inbound` and gating facts of a message (a thread is its own channel)."""
    channel = message.channel
    guild = message.guild
    author = message.author
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    mentioned, text = addressed_text(message, me)
    inbound = Inbound(
        platform=PLATFORM,
        user=str(author.id),
        channel=str(channel.id),
        text=text,
        message_id=str(message.id),
        is_direct=guild is None,
        mentioned_bot=mentioned,
        display_name=author.display_name,
        space=str(guild.id) if guild is not None else None,
        parent_channel=str(parent) if parent is not None else None,
        roles=_roles(author),
        attachments=attachments(message, settings.attachment_hosts),
    )
    facts = Facts(
        user=inbound.user,
        channel=inbound.channel,
        is_direct=inbound.is_direct,
        mentioned_bot=mentioned,
        author_is_bot=author.bot or message.webhook_id is not None,
        parent_channel=inbound.parent_channel,
        space=inbound.space,
        roles=inbound.roles,
        require_mention=mention_rule(settings, inbound.channel, parent, guild),
    )
    return Seen(inbound, facts)


def reply_target(message: discord.Message) -> ReplyTarget:
    """Where the answer to `message` goes, in a form any process can store: its channel (a
    thread is its own channel, as in the session key: then `thread` names it too, and its
    parent is kept), the message answered, and the guild."""
    channel, guild = message.channel, message.guild
    thread = str(channel.id) if isinstance(channel, discord.Thread) else None
    extra = {"guild": str(guild.id)} if guild is not None else {}
    if isinstance(channel, discord.Thread) and channel.parent_id is not None:
        extra["parent"] = str(channel.parent_id)
    return ReplyTarget(PLATFORM, str(channel.id), thread, str(message.id), extra=tuple(sorted(extra.items())))


def attachments(message: discord.Message, hosts: Sequence[str]) -> tuple[UrlSource, ...]:
    """The message's files, to be read during its turn (Discord's CDN needs no token), only
    from `hosts` (`discord.attachment_hosts`): any other URL is refused unread."""
    allowed = frozenset(h.lower() for h in hosts)
    return tuple(
        UrlSource(a.filename, a.url, declared_size=a.size, hosts=allowed) for a in message.attachments
    )


def read_interaction(interaction: discord.Interaction[discord.Client], settings: DiscordSettings) -> Seen:
    """The facts of a slash command's caller: a command is always addressed to the bot."""
    channel = interaction.channel
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    guild_id = interaction.guild_id
    inbound = Inbound(
        platform=PLATFORM,
        user=str(interaction.user.id),
        channel=str(interaction.channel_id),
        text="",
        message_id=f"interaction-{interaction.id}",
        is_direct=guild_id is None,
        mentioned_bot=True,
        display_name=interaction.user.display_name,
        space=str(guild_id) if guild_id is not None else None,
        parent_channel=str(parent) if parent is not None else None,
        roles=_roles(interaction.user),
    )
    facts = Facts(
        user=inbound.user,
        channel=inbound.channel,
        is_direct=inbound.is_direct,
        mentioned_bot=True,
        author_is_bot=interaction.user.bot,
        parent_channel=inbound.parent_channel,
        space=inbound.space,
        roles=inbound.roles,
    )
    return Seen(inbound, facts)


def addressed_text(message: discord.Message, me: discord.ClientUser) -> tuple[bool, str]:
    """Whether the message addresses the bot, and its text without the bot's mention.

    Addressed means: the bot's user (or its managed role) is mentioned, or the message
    replies to one of the bot's messages.
    """
    tokens = [f"<@{me.id}>", f"<@!{me.id}>"]
    mentioned = any(u.id == me.id for u in message.mentions)
    self_role = message.guild.self_role if message.guild is not None else None
    if self_role is not None:
        tokens.append(f"<@&{self_role.id}>")
        mentioned = mentioned or self_role in message.role_mentions
    ref = message.reference
    if ref is not None:
        replied = ref.resolved if isinstance(ref.resolved, discord.Message) else ref.cached_message
        mentioned = mentioned or (replied is not None and replied.author.id == me.id)
    pattern = "|".join(re.escape(t) for t in tokens)
    text = re.sub(rf"[ \t]*(?:{pattern})[ \t]*", " ", message.content).strip()
    return mentioned, text


def mention_rule(
    settings: DiscordSettings, channel: str, parent: int | None, guild: discord.Guild | None
) -> bool | None:
    """`mention_overrides` for this place: the channel's, else its parent's, else the guild's."""
    overrides = settings.mention_overrides
    for place in (channel, parent, guild.id if guild is not None else None):
        if place is not None and str(place) in overrides:
            return overrides[str(place)]
    return None


def _roles(author: discord.User | discord.Member) -> tuple[str, ...]:
    if isinstance(author, discord.Member):
        return tuple(str(r.id) for r in author.roles)
    return ()
