"""What `chatlane run` would refuse, found without connecting anywhere.

`chatlane check` prints these; `chatlane run` checks the same list first and refuses on
any error, so the two cannot disagree about a config. What can only be known by
connecting (a port in use, a token the platform rejects, Redis down) is left to `run`,
and `check` says so.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from bots.health import MetricsSettings
from bots.health import refusal as metrics_refusal
from bots.http.service import refusal as http_refusal
from core.config import TRANSCRIPT_ONLY, Loaded
from core.model import parse_key

SLACK_BOT_PREFIX = "xoxb-"
SLACK_APP_PREFIX = "xapp-"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Literal["error", "warning"]
    text: str


def inspect(loaded: Loaded) -> list[Finding]:
    from bots.console import ConsoleSettings
    from bots.discord.settings import DiscordSettings
    from bots.http.settings import HttpSettings
    from bots.slack.settings import SlackSettings

    c, secrets = loaded.config, loaded.secrets
    http, discord = loaded.section(HttpSettings), loaded.section(DiscordSettings)
    slack, console = loaded.section(SlackSettings), loaded.section(ConsoleSettings)
    found: list[Finding] = []

    def error(text: str) -> None:
        found.append(Finding("error", text))

    if not any(s.enabled for s in (http, discord, slack, console)):
        error(f"nothing to run: every bot is disabled in {loaded.path.name}")
    if http.enabled and (
        why := http_refusal(http.host, secrets.get(http.token_env) is not None, http.token_env)
    ):
        error(why)
    ops = loaded.section(MetricsSettings)
    if why := metrics_refusal(ops, secrets.get(ops.token_env) is not None):
        error(why)
    if c.store.backend == "files":
        if (why := _unwritable(loaded.state_dir)) is not None:
            error(f"store.path: cannot use state directory {loaded.state_dir}: {why}")
    else:
        from core.store import safe_url, url_problem

        if not _redis_url_parses(c.store.url):
            error(f"store.url {safe_url(c.store.url)!r} is not a Redis URL: {url_problem(c.store.url)}")
    if c.agent.backend == "openai":
        o = c.agent.openai
        parts = urlsplit(o.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            error(f"agent.openai.base_url must be an http(s) URL, got {o.base_url!r}")
        elif secrets.get(o.api_key_env) is None and not _is_local(parts.hostname):
            found.append(
                Finding(
                    "warning",
                    f"agent.openai.base_url {o.base_url} is not on this machine and no API key is set "
                    f"(environment variable {o.api_key_env}, named by agent.openai.api_key_env): "
                    "most hosted servers will answer 401",
                )
            )
    if discord.enabled:
        if not discord.api_base_url.startswith(("https://", "http://")):
            error(f"discord.api_base_url must be an http(s) URL, got {discord.api_base_url!r}")
        if urlsplit(discord.gateway_url).scheme not in ("ws", "wss"):
            error(f"discord.gateway_url must be a ws(s) URL, got {discord.gateway_url!r}")
    if slack.enabled:
        bot = secrets.get(slack.bot_token_env)
        if bot is not None and not bot.get_secret_value().startswith(SLACK_BOT_PREFIX):
            error(f"slack: the bot token in {slack.bot_token_env} must start with {SLACK_BOT_PREFIX!r}")
        app = secrets.get(slack.app_token_env)
        if (
            slack.mode == "socket"
            and app is not None
            and not app.get_secret_value().startswith(SLACK_APP_PREFIX)
        ):
            error(f"slack: the app-level token in {slack.app_token_env} must start with {SLACK_APP_PREFIX!r}")
    speaking = {"discord": discord.enabled, "slack": slack.enabled}
    for schedule in c.schedules:
        platform = parse_key(schedule.key).platform
        if not speaking.get(platform, platform in TRANSCRIPT_ONLY):
            error(
                f"schedule {schedule.name!r}: cannot speak in {schedule.key}: "
                f"no {platform} bot is enabled in {loaded.path.name}"
            )
    return found


def _unwritable(state: Path) -> str | None:
    """Why the files store could not use `state` (None if it can), checked without creating
    anything, in the words the store itself would use (the OS's error text)."""
    if state.exists() and not state.is_dir():
        return os.strerror(errno.ENOTDIR)
    probe = state
    while not probe.exists():
        if probe.parent == probe:
            return os.strerror(errno.ENOENT)
        probe = probe.parent
    if not probe.is_dir():
        return os.strerror(errno.ENOTDIR)
    for folder in (probe, *(state / sub for sub in ("sessions", "transcripts", "locks"))):
        if not folder.exists():
            continue
        if not folder.is_dir():
            return f"{folder}: {os.strerror(errno.ENOTDIR)}"
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
        if not os.access(folder, os.W_OK | os.X_OK):
            return os.strerror(errno.EACCES)
    return None


def _redis_url_parses(url: str) -> bool:
    from redis.connection import parse_url

    try:
        parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        return False
    return True


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local
