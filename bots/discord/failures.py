"""What a failed Discord call looks like in the log (shared by replies, streams and commands)."""

from __future__ import annotations

import aiohttp
import discord

PlatformFailure = (discord.DiscordException, aiohttp.ClientError, OSError)
"""What a Discord call can raise when Discord, the network or a permission says no
(TimeoutError is an OSError)."""


def describe_failure(exc: BaseException, hint: str) -> str:
    """A log line's worth about a failed Discord call; `hint` says what would fix a 403."""
    if isinstance(exc, discord.Forbidden):
        return f"missing permission (403, Discord code {exc.code}: {exc.text}); {hint}"
    if isinstance(exc, discord.RateLimited):
        return (
            f"rate limited for {exc.retry_after:.0f}s, longer than discord.max_ratelimit_wait_s; "
            "the message was not sent"
        )
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status} (Discord code {exc.code}: {exc.text})"
    return f"{type(exc).__name__}: {exc}"
