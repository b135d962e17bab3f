"""The lines of one inbox file (core/store/files/inbox.py): read back (`fold`), appended,
rewritten when compacted, removed once empty. Blocking, page-cache-small operations on a
descriptor whose flock the caller holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from core.model import InboxItem, SessionKey, answer_ids_of, validate_key
from core.store import jsonl


@dataclass(slots=True)
class Fold:
    """One inbox file read from start to end."""

    items: dict[str, InboxItem] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    parked: set[str] = field(default_factory=set)
    bad: list[bytes] = field(default_factory=list)

    def pending(self, answered: Collection[str] = ()) -> list[InboxItem]:
        return [i for i in self.items.values() if i.item_id not in self.closed and i.item_id not in answered]


def encode_line(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace") + b"\n"


def answer_line(item_id: str, answer_ids: Sequence[str]) -> bytes:
    """The line naming an item's answer messages; `answer_id` (the first) is what a process
    of an older version reads (it finishes the answer in that one message)."""
    ids = list(answer_ids)
    return encode_line({"answer": item_id, "answer_ids": ids, "answer_id": ids[0] if ids else None})


def append_lines(fd: int, data: bytes) -> jsonl.Written:
    """Append whole lines (closing a torn last line first); cut back on an error."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        data = b"\n" + data
    try:
        jsonl.write_all(fd, data)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise
    return jsonl.Written(size, size + len(data), stored=True)


def remove_if_empty(path: str) -> None:
    """Unlink an inbox file that is still empty under its lock (never one being written)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        if lock_descriptor(fd, blocking=False):
            if os.fstat(fd).st_size == 0 and os.fstat(fd).st_nlink:
                os.unlink(path)  # writers waiting for this lock see it unlinked and reopen
            unlock_descriptor(fd)
    finally:
        os.close(fd)


def rewrite(path: str, pending: list[InboxItem]) -> None:
    """Replace the inbox file (whose lock the caller holds) with one holding only `pending`.

    Atomic (temp file, fsync, rename): a crash leaves the old file or the new one. Writers
    waiting for the old file's lock find it unlinked and open the new one."""
    data = b""
    for item in pending:
        data += encode_line({"add": item.to_json(), "owner": item.owner})
        data += encode_line({"try": item.item_id}) * item.attempts
        if item.answer_ids:
            data += answer_line(item.item_id, item.answer_ids)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        jsonl.write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def whole_lines(fd: int) -> Iterator[bytes]:
    """The file's whole lines (with their newline); a torn last line is left out."""
    size = os.fstat(fd).st_size
    raw = os.pread(fd, size, 0) if size else b""
    for line in raw.splitlines(keepends=True):
        if line.endswith(b"\n"):
            yield line


def fold(fd: int) -> Fold:
    """Read the file from start to end: its items with their owner, tries and answer messages."""
    out = Fold()
    tries: dict[str, int] = {}
    answers: dict[str, tuple[str, ...]] = {}
    owners: dict[str, str] = {}
    for raw in whole_lines(fd):
        line = raw.rstrip(b"\n")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            if "add" in obj:
                item = InboxItem.from_json(obj["add"])
                if item.item_id not in out.items:
                    out.items[item.item_id] = item
                owners[item.item_id] = str(obj.get("owner", ""))
            elif "own" in obj:
                for i in _ids(obj["own"]):
                    owners[i] = str(obj.get("owner", ""))
            elif "try" in obj:
                tries[str(obj["try"])] = tries.get(str(obj["try"]), 0) + 1
            elif "answer" in obj:
                one = obj.get("answer_id")
                answers[str(obj["answer"])] = answer_ids_of(obj.get("answer_ids"), one and str(one))
            elif "done" in obj or "park" in obj:
                named = _ids(obj.get("done", obj.get("park")))
                out.closed.update(named)
                if "park" in obj:
                    out.parked.update(named)
            else:
                raise ValueError("unknown inbox record")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            out.bad.append(line)
    for seq, (item_id, item) in enumerate(out.items.items(), start=1):
        out.items[item_id] = replace(
            item,
            seq=seq,
            owner=owners.get(item_id, ""),
            attempts=tries.get(item_id, 0),
            answer_ids=answers.get(item_id, ()),
        )
    return out


def _ids(raw: object) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise ValueError("inbox ids must be a list of strings")
    return list(raw)


def first_key(path: Path) -> SessionKey | None:
    """The key named by the first readable `add` line of an inbox file."""
    try:
        with path.open("rb") as f:
            for line in f:
                with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
                    key = json.loads(line).get("add", {}).get("key")
                    if isinstance(key, str):
                        return validate_key(key)
    except OSError:
        return None
    return None
