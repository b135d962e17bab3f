"""Per-session memory as JSON Lines, one file per session id.

These are blocking functions; the file store runs them off the event loop. An append
is durable (fsync) before it returns, so a reply is only sent after its records are on
disk. A kill -9 mid-append can leave a torn last line: readers skip it (with a
warning), and the next append first closes it with a newline so a new record is never
glued onto a fragment. Garbage in the middle of a file is skipped the same way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.types import AttachmentRef, ChatMessage

log = logging.getLogger("chatlane.transcript")

_BLOCK = 64 * 1024
_SLACK = 8
_ROLES = frozenset({"system", "user", "assistant"})
_SHA256 = re.compile(r"[0-9a-f]{64}")


def encode(record: ChatMessage) -> bytes:
    obj: dict[str, Any] = {"role": record.role, "content": record.content, "at": record.at}
    if record.message_id:
        obj["messageId"] = record.message_id
    if record.interrupted:
        obj["interrupted"] = True
    if record.author:
        obj["author"] = record.author
    if record.backfill:
        obj["backfill"] = True
    if record.attachments:
        obj["attachments"] = [_ref_to_json(a) for a in record.attachments]
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace") + b"\n"


def decode(line: bytes) -> ChatMessage:
    """One record; ValueError when the line is not a valid record."""
    obj = json.loads(line)
    if not isinstance(obj, dict) or obj.get("role") not in _ROLES:
        raise ValueError("not a transcript record")
    content, at = obj.get("content"), obj.get("at", 0.0)
    if not isinstance(content, str) or not isinstance(at, int | float):
        raise ValueError("transcript record has wrong field types")
    return ChatMessage(
        role=obj["role"],
        content=content,
        at=float(at),
        message_id=str(obj.get("messageId", "")),
        interrupted=bool(obj.get("interrupted", False)),
        attachments=_refs(obj.get("attachments")),
        author=str(obj.get("author", "")),
        backfill=bool(obj.get("backfill", False)),
    )


def _ref_to_json(ref: AttachmentRef) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "name": ref.name,
        "mime": ref.mime,
        "size": ref.size,
        "sha256": ref.sha256,
        "kind": ref.kind,
    }
    for field in ("width", "height", "lines"):
        if value := getattr(ref, field):
            obj[field] = value
    return obj


def _refs(raw: Any) -> tuple[AttachmentRef, ...]:
    """Attachment references of a record; records written before attachments have none.

    A malformed reference is dropped (the record's text still counts), never guessed at.
    """
    if not isinstance(raw, list):
        return ()
    refs: list[AttachmentRef] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        try:
            kind, sha = item["kind"], item["sha256"]
            if kind not in ("image", "text") or not isinstance(sha, str) or not _SHA256.fullmatch(sha):
                continue
            refs.append(
                AttachmentRef(
                    name=str(item["name"]),
                    mime=str(item["mime"]),
                    size=int(item["size"]),
                    sha256=sha,
                    kind=kind,
                    width=int(item.get("width", 0)),
                    height=int(item.get("height", 0)),
                    lines=int(item.get("lines", 0)),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(refs)


def _name(path: str | Path) -> str:
    return os.path.basename(path)


def append(path: str | Path, records: Sequence[ChatMessage]) -> None:
    if not records:
        return
    data = b"".join(encode(r) for r in records)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            log.warning(
                "transcript %s ended in a torn line; closing it before appending", os.path.basename(path)
            )
            data = b"\n" + data
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError:
            # The caller hears it failed, so no fragment of it may stay behind either.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data`, or raise: `os.write` may write only part of it (full disk,
    file size limit) and report no error until the next call."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def tail(path: str | Path, n: int) -> list[ChatMessage]:
    """The last `n` readable records, reading backwards from the end of the file."""
    if n <= 0:
        return []
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a with block would nest deeply
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        pos, buf = end, b""
        # A few lines more than asked, so a skipped bad line does not shorten memory.
        while pos > 0 and buf.count(b"\n") <= n + _SLACK:
            step = min(_BLOCK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
    lines = buf.split(b"\n")
    torn = lines.pop()  # after the last newline: empty, or a record cut by a crash
    if torn.strip():
        log.warning(
            "transcript %s has a torn last line (%d bytes); skipped", os.path.basename(path), len(torn)
        )
    if pos > 0:
        lines = lines[1:]  # the first line may start mid-record
    records: list[ChatMessage] = []
    for line in lines[-(n + _SLACK) :]:
        if not line.strip():
            continue
        try:
            records.append(decode(line))
        except (ValueError, UnicodeDecodeError):
            log.warning(
                "transcript %s has an unreadable line (%d bytes); skipped", os.path.basename(path), len(line)
            )
    return records[-n:]


def read_all(path: Path) -> tuple[list[ChatMessage], int]:
    """Every readable record and the number of lines skipped as unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    records: list[ChatMessage] = []
    bad = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(decode(line))
        except (ValueError, UnicodeDecodeError):
            bad += 1
    return records, bad
