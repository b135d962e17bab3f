"""`[slack]`: the Slack app's settings (Socket Mode or the HTTP Events API)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from core.config import Access, AdapterSettings, SecretNeed, StreamSettings


class SlackSettings(AdapterSettings, Access, StreamSettings):
    section: ClassVar[str] = "slack"
    enabled: bool = False
    mode: Literal["socket", "http"] = "socket"
    bot_token_env: str = "SLACK_BOT_TOKEN"
    app_token_env: str = "SLACK_APP_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    api_base_url: str = "https://slack.com/api/"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 3000
    path: str = "/slack/events"
    reply_in_thread: bool = True
    thread_replies_addressed: bool = True
    ack_reaction: str = ""
    slash_command: str = ""
    history_backfill: Annotated[int, Field(ge=0, le=1000)] = 20
    """On a session's first turn, read this many earlier messages of the thread or DM (0: off)."""
    stream: Literal["native", "edit", "off"] = "native"
    """native: chat.startStream/appendStream/stopStream in threads (edits where refused or
    outside a thread); edit: chat.postMessage then chat.update; off: the whole answer at the end."""

    def secret_needs(self) -> tuple[SecretNeed, ...]:
        """The bot token always; the app token in socket mode, the signing secret in http mode."""
        if not self.enabled:
            return ()
        transport = (
            SecretNeed("app_token_env", required=True, why="slack mode is socket")
            if self.mode == "socket"
            else SecretNeed("signing_secret_env", required=True, why="slack mode is http")
        )
        return (SecretNeed("bot_token_env", required=True, why="slack is enabled"), transport)
