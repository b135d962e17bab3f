"""Logging set-up: one line per event, every configured secret scrubbed from every line.

A failure is one line at ERROR: the message, then `: <ExceptionType>: <text>` of the
exception (and of its cause, which usually names the real reason). Its traceback is
printed only at `--log-level DEBUG`: a model that is down for an hour must not write a
hundred lines per request. `--log-format json` writes one JSON object per line for log
shippers, with the same fields, secrets scrubbed the same way; a record logged with
`extra={"fields": {...}}` adds those fields to its JSON object (a turn: `key_hash`,
`outcome`, `latency_ms`, ...), so a shipper need not parse the message. In JSON a
session key passed as an argument of the message is written as `key#<key_hash>`: lines
shipped off the host name no user and channel, and still group by conversation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Literal

REDACTED = "[redacted]"
LogFormat = Literal["text", "json"]
_SESSION_KEY = re.compile(r"agent:[^:\s]+:[^:\s]+:[^:\s]+:[^\s]+")
"""A session key as log arguments carry it (core.model.keys' grammar, loosely: only to
hide it, never to parse it)."""


def key_hash(key: str) -> str:
    """A session key as log fields carry it: the first 16 hex digits of its SHA-256 (the
    same key always gives the same hash, so lines of one conversation can be grouped)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class RedactSecrets:
    """Replaces secret values in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


def exception_summary(exc: BaseException) -> str:
    """`Type: text`, followed by `(cause: Type: text)` for a chained cause."""
    out = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None:
        out += (
            f" (cause: {type(cause).__name__}: {cause})"
            if str(cause)
            else f" (cause: {type(cause).__name__})"
        )
    return out


class _Formatter(logging.Formatter):
    def __init__(self, redact: RedactSecrets, tracebacks: bool, fmt: LogFormat) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact, self.tracebacks, self.fmt = redact, tracebacks, fmt

    def format(self, record: logging.LogRecord) -> str:
        message = self._hashed_message(record) if self.fmt == "json" else record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            message += f": {exception_summary(exc)}"
        trace = self.formatException(record.exc_info) if record.exc_info and exc and self.tracebacks else ""
        if self.fmt == "json":
            obj = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname,
                "logger": record.name,
                "message": message,
            }
            fields = getattr(record, "fields", None)
            if isinstance(fields, dict):
                obj.update({k: v for k, v in fields.items() if k not in obj})
            if trace:
                obj["traceback"] = trace
            return self.redact.scrub(json.dumps(obj, ensure_ascii=False, default=str))
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        if trace:
            line += "\n" + trace
        return self.redact.scrub(line)

    @staticmethod
    def _hashed_message(record: logging.LogRecord) -> str:
        """The message with every session-key argument as `key#<hash>`."""
        args = record.args
        if not isinstance(args, tuple) or not args:
            return record.getMessage()
        hidden = tuple(
            f"key#{key_hash(a)}" if isinstance(a, str) and _SESSION_KEY.fullmatch(a) else a for a in args
        )
        return str(record.msg) % hidden if hidden != args else record.getMessage()


def setup_logging(level: str = "INFO", secrets: Iterable[str] = (), fmt: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(RedactSecrets(secrets), tracebacks=level == "DEBUG", fmt=fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("discord", "slack_bolt", "slack_sdk", "httpx", "openai", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def announce(text: str, fmt: LogFormat, *, level: str = "INFO", **fields: object) -> None:
    """A line the CLI always prints on stderr, whatever `--log-level` (which config it
    read, a config error): plain text, or under `--log-format json` one JSON object like
    every log line (with `fields`), so a log shipper never meets a line it cannot parse."""
    if fmt != "json":
        print(f"chatlane: {text}", file=sys.stderr)
        return
    record = logging.LogRecord("chatlane", logging.getLevelName(level), "", 0, text, None, None)
    record.fields = fields
    print(_Formatter(RedactSecrets(()), tracebacks=False, fmt="json").format(record), file=sys.stderr)
