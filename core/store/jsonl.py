"""Per-session memory as JSON Lines, one file per session id.

One line is one commit: a turn's records, its commit id, the session's turn count and
the time, `{"commit": id, "turns": n, "at": t, "records": [...]}`. A line is the unit
that is either whole or not there, so a turn is all-or-nothing: a kill -9 mid-write
leaves a torn last line that readers skip (with a warning), and the next append first
closes it with a newline so a new line is never glued onto a fragment. A failed write
(full disk, read-only remount) is cut off again before the error is reported. Lines of
the older format (one record per line) are still read. Garbage in the middle of a file
is skipped the same way as a torn line.

These are blocking functions; the file store runs them off the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.model import AttachmentRef, ChatMessage

log = logging.getLogger("chatlane.transcript")

_BLOCK = 256 * 1024
_FIRST_READ = 4096
_ROLES = frozenset({"system", "user", "assistant"})
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _record(obj: Any) -> ChatMessage:
    """One record from its JSON object; ValueError when it is not a valid record."""
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
        summary=obj.get("summary") is True,
        keeps=keeps if isinstance(keeps := obj.get("keeps", 0), int) and keeps >= 0 else 0,
        attachments=_refs(obj.get("attachments")),
        author=str(obj.get("author", "")),
        backfill=bool(obj.get("backfill", False)),
        origin=str(obj.get("origin", "")),
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """What the last commit of a session says: for the entry's derived fields."""

    commit_id: str
    turns: int
    at: float


def _record_obj(record: ChatMessage) -> dict[str, Any]:
    obj: dict[str, Any] = {"role": record.role, "content": record.content, "at": record.at}
    if record.message_id:
        obj["messageId"] = record.message_id
    if record.interrupted:
        obj["interrupted"] = True
    if record.summary:
        obj["summary"] = True
        obj["keeps"] = record.keeps
    if record.author:
        obj["author"] = record.author
    if record.backfill:
        obj["backfill"] = True
    if record.origin:
        obj["origin"] = record.origin
    if record.attachments:
        obj["attachments"] = [_ref_to_json(a) for a in record.attachments]
    return obj


def commit_prefix(commit_id: str) -> bytes:
    """How the line of commit `commit_id` begins (`encode_commit` puts the id first)."""
    return b'{"commit":' + json.dumps(commit_id).encode() + b","


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


def encode_commit(
    commit_id: str, turns: int, at: float, records: Sequence[ChatMessage], answered: Sequence[str] = ()
) -> bytes:
    """One commit as one line (without the newline); it begins with `commit_prefix`.
    `answered` names the inbox items the turn answered (the file store's done-marking)."""
    obj: dict[str, Any] = {"commit": commit_id, "turns": turns, "at": at}
    obj["records"] = [_record_obj(r) for r in records]
    if answered:
        obj["answered"] = list(answered)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def decode_line(line: bytes) -> tuple[list[ChatMessage], Progress | None]:
    """The records of one line and, for a commit line, its progress; ValueError if invalid."""
    obj = json.loads(line)
    if isinstance(obj, dict) and "records" in obj:
        commit, turns, at, records = obj.get("commit"), obj.get("turns"), obj.get("at"), obj["records"]
        if (
            not isinstance(commit, str)
            or not isinstance(turns, int)
            or isinstance(turns, bool)
            or not isinstance(at, int | float)
            or not isinstance(records, list)
        ):
            raise ValueError("transcript commit has wrong field types")
        return [_record(r) for r in records], Progress(commit, turns, float(at))
    return [_record(obj)], None


@dataclass(frozen=True, slots=True)
class Written:
    """A commit line written (not yet synced): the file's size before and after."""

    start: int
    end: int
    stored: bool
    """False when the file's last line already was this commit (a retry): nothing written."""


def write_commit(fd: int, line: bytes, commit_id: str) -> Written:
    """Append one commit line to the open file `fd` (O_APPEND), closing a torn last line
    first; the caller makes it durable. On an error the file is cut back to where it was."""
    size = os.fstat(fd).st_size
    data = line + b"\n"
    if size:
        if os.pread(fd, 1, size - 1) != b"\n":
            log.warning("transcript fd %d ended in a torn line; closing it before appending", fd)
            data = b"\n" + data
        elif last_line_starts_with(fd, size, commit_prefix(commit_id)):
            return Written(size, size, stored=False)
    try:
        write_all(fd, data)
    except OSError:
        # The caller hears it failed, so no fragment of it may stay behind either.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise
    return Written(size, size + len(data), stored=True)


def read_forward(fd: int, start: int, end: int) -> tuple[list[ChatMessage], Progress | None, int]:
    """The records of the whole lines in bytes [start, end) (which begins at a line start),
    the progress of the last commit among them, and where the last whole line ends."""
    data = os.pread(fd, end - start, start)
    cut = data.rfind(b"\n")
    if cut < 0:
        return [], None, start
    records: list[ChatMessage] = []
    progress: Progress | None = None
    for line in data[:cut].split(b"\n"):
        if not line.strip():
            continue
        try:
            got, p = decode_line(line)
        except (ValueError, UnicodeDecodeError):
            log.warning("transcript fd %d has an unreadable line (%d bytes); skipped", fd, len(line))
            continue
        records.extend(got)
        progress = p or progress
    return records, progress, start + cut + 1


def tail_fd(fd: int, size: int, n: int, *, name: str = "") -> tuple[list[ChatMessage], Progress | None, bool]:
    """The last `n` readable records of the file (reading backwards only as far as they
    go), the progress of its last commit, and whether the records are the whole file."""
    found: list[list[ChatMessage]] = []
    count = 0
    progress: Progress | None = None
    seen_progress = False
    whole = True
    for line in _lines_backwards(fd, size, name=name):
        if count >= n and seen_progress:
            whole = False
            break
        try:
            records, p = decode_line(line)
        except (ValueError, UnicodeDecodeError):
            log.warning("transcript %s has an unreadable line (%d bytes); skipped", name, len(line))
            continue
        if not seen_progress:
            progress, seen_progress = p, True
        if count < n:
            found.append(records)
            count += len(records)
    flat = [r for records in reversed(found) for r in records]
    return flat[-n:] if n > 0 else [], progress, whole and count <= n


def last_progress(path: str) -> Progress | None:
    """The progress of the last whole commit line of `path` (None if none or no file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return last_progress_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def last_progress_fd(fd: int, size: int) -> Progress | None:
    """Reads backwards only as far as the last readable line: O(that line)."""
    for line in _lines_backwards(fd, size):
        try:
            _records, progress = decode_line(line)
        except (ValueError, UnicodeDecodeError):
            continue  # a damaged line: the one before it counts
        return progress
    return None


def _lines_backwards(fd: int, size: int, *, name: str = "") -> Iterator[bytes]:
    """The whole lines of the file, last first. What follows the last newline is empty or
    a torn line (a write cut by a crash): it is skipped. Reads only as far back as the
    caller consumes (small reads first, since most callers want the last line or few),
    and copies each byte a bounded number of times."""
    pos = size
    chunk, end = b"", 0  # chunk[:end] is not consumed yet
    held: list[bytes] = []  # pieces of the line being read when it spans chunks, last first
    step = _FIRST_READ
    after_last_newline = True
    while True:
        nl = chunk.rfind(b"\n", 0, end)
        if nl < 0:
            held.append(chunk[:end])
            if pos == 0:
                break
            step = min(step * 2, _BLOCK, pos) if chunk else min(step, pos)
            pos -= step
            chunk = os.pread(fd, step, pos)
            end = len(chunk)
            continue
        line = chunk[nl + 1 : end]
        if held:
            line += b"".join(reversed(held))
            held = []
        end = nl
        if after_last_newline:
            after_last_newline = False
            if line.strip():
                log.warning("transcript %s has a torn last line (%d bytes); skipped", name, len(line))
        elif line.strip():
            yield line
    first = b"".join(reversed(held))
    if not after_last_newline and first.strip():
        yield first


def recent_answered(path: str, commits: int) -> set[str]:
    """The inbox item ids named as answered by the last `commits` commit lines of `path`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return set()
    found: set[str] = set()
    try:
        for i, line in enumerate(_lines_backwards(fd, os.fstat(fd).st_size)):
            if i >= commits:
                break
            if b'"answered"' not in line:
                continue
            try:
                ids = json.loads(line).get("answered")
            except (ValueError, UnicodeDecodeError, AttributeError):
                continue
            if isinstance(ids, list):
                found.update(i for i in ids if isinstance(i, str))
    finally:
        os.close(fd)
    return found


def last_line_starts_with(fd: int, size: int, prefix: bytes) -> bool:
    """Whether the last whole line of the file begins with `prefix` (no parsing)."""
    for line in _lines_backwards(fd, size):
        return line.startswith(prefix)
    return False


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data`, or raise: `os.write` may write only part of it (full disk,
    file size limit) and report no error until the next call."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def tail(path: str, n: int) -> list[ChatMessage]:
    """The last `n` readable records: reads backwards, only as far as those records."""
    if n <= 0:
        return []
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        return tail_fd(fd, os.fstat(fd).st_size, n, name=os.path.basename(path))[0]
    finally:
        os.close(fd)


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
            records.extend(decode_line(line)[0])
        except (ValueError, UnicodeDecodeError):
            bad += 1
    return records, bad
