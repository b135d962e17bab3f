"""`[discord]`: the Discord bot's settings (access rules, gateway, shards)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from core.config import Access, AdapterSettings, SecretNeed, StreamSettings


class DiscordSettings(AdapterSettings, Access, StreamSettings):
    section: ClassVar[str] = "discord"
    enabled: bool = False
    token_env: str = "DISCORD_BOT_TOKEN"
    api_base_url: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg/"
    allow_guilds: tuple[str, ...] = ()
    allow_roles: tuple[str, ...] = ()
    mention_overrides: dict[str, bool] = Field(default_factory=dict)
    """Per guild or channel id: whether a mention is required there."""
    reply_to: bool = True
    ack_reaction: str = ""
    shard_count: Annotated[int, Field(ge=1)] | None = None
    shard_ids: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    guild_ready_timeout_s: Annotated[float, Field(ge=0)] = 2.0
    """How long discord.py waits for more servers (GUILD_CREATE) before it is ready."""
    ready_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """start() waits this long for the gateway to be ready, then goes on connecting in the background."""
    max_ratelimit_wait_s: Annotated[float, Field(ge=30)] | None = 60.0
    """A send rate-limited for longer than this fails (logged) instead of holding its conversation."""
    sync_commands: bool = True
    """Register /new, /reset, /status and /stop with Discord at startup (one process per bot is enough)."""
    history_backfill: Annotated[int, Field(ge=0, le=100)] = 20
    """On a session's first turn, read this many earlier messages of the channel/thread (0: off)."""
    attachment_hosts: tuple[str, ...] = ("cdn.discordapp.com", "media.discordapp.net")
    """Attachments are downloaded only from these hosts (Discord's CDN; redirects too):
    a message event cannot point the bot at any other server."""
    stream: Literal["edit", "off"] = "edit"
    """edit: post the answer early and edit it as it grows; off: send it whole at the end."""

    @model_validator(mode="after")
    def _shards_fit(self) -> DiscordSettings:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("shard_ids needs shard_count (the total number of shards)")
            if not self.shard_ids or any(i >= self.shard_count for i in self.shard_ids):
                raise ValueError(f"shard_ids must be a non-empty list of ids below {self.shard_count}")
        return self

    def secret_needs(self) -> tuple[SecretNeed, ...]:
        return (SecretNeed("token_env", required=True, why="discord is enabled"),) if self.enabled else ()
