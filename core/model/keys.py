"""Session keys: build, parse and validate `agent:<agentId>:<platform>:<user>:<channel>[:<thread>]`.

Keys arrive from HTTP headers too, so they are untrusted: anything outside the grammar
is rejected with a `ValueError` that says which part is wrong. A key is canonical: one
conversation has exactly one spelling.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal, NewType

SessionKey = NewType("SessionKey", str)
"""A canonical, validated key: `agent:<agentId>:<platform>:<user>:<channel>[:<thread>]`."""

Scope = Literal["user-channel", "channel", "user"]
SCOPES: tuple[Scope, ...] = ("user-channel", "channel", "user")
ANY = "*"

_AGENT = re.compile(r"[a-z0-9_-]{1,64}")
_PLATFORM = re.compile(r"[a-z0-9-]{1,32}")
_PART = re.compile(r"[A-Za-z0-9._@-]{1,128}")
MAX_KEY_LENGTH = 6 + 64 + 1 + 32 + 3 * (1 + 128)


@dataclass(frozen=True, slots=True)
class KeyParts:
    agent: str
    platform: str
    user: str
    channel: str
    thread: str | None = None


def _check(name: str, value: str, pattern: re.Pattern[str], *, wildcard: bool) -> None:
    if wildcard and value == ANY:
        return
    if not pattern.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ValueError(f"invalid {name} {shown!r} in session key: must match {pattern.pattern}")


def build_key(
    agent: str,
    platform: str,
    user: str,
    channel: str,
    thread: str | None = None,
    *,
    scope: Scope = "user-channel",
) -> SessionKey:
    """The key of one conversation under `scope`; the parts are validated."""
    if scope == "channel":
        user = ANY
    elif scope == "user":
        channel, thread = ANY, None
    elif scope != "user-channel":
        raise ValueError(f"unknown session scope {scope!r}: expected one of {', '.join(SCOPES)}")
    return format_key(KeyParts(agent, platform, user, channel, thread))


def format_key(parts: KeyParts) -> SessionKey:
    _check("agent id", parts.agent, _AGENT, wildcard=False)
    _check("platform", parts.platform, _PLATFORM, wildcard=False)
    _check("user", parts.user, _PART, wildcard=True)
    _check("channel", parts.channel, _PART, wildcard=True)
    fields = ["agent", parts.agent, parts.platform, parts.user, parts.channel]
    if parts.thread is not None:
        _check("thread", parts.thread, _PART, wildcard=False)
        fields.append(parts.thread)
    return SessionKey(":".join(fields))


@functools.lru_cache(maxsize=4096)
def parse_key(key: str) -> KeyParts:
    """Split and validate a key; raises ValueError naming the bad part. Memoized (a
    turn parses its key several times; `KeyParts` is frozen); a bad key is not cached."""
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"session key is {len(key)} characters long; at most {MAX_KEY_LENGTH}")
    fields = key.split(":")
    if len(fields) not in (5, 6):
        raise ValueError(
            "session key must look like agent:<agentId>:<platform>:<user>:<channel>[:<thread>]"
            f" (5 or 6 ':'-separated parts, got {len(fields)})"
        )
    if fields[0] != "agent":
        raise ValueError("session key must start with 'agent:'")
    parts = KeyParts(fields[1], fields[2], fields[3], fields[4], fields[5] if len(fields) == 6 else None)
    format_key(parts)  # validates every part
    return parts


def validate_key(key: str) -> SessionKey:
    parse_key(key)
    return SessionKey(key)
