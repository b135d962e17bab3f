"""What this process keeps of the transcripts it wrote last (issue 28): the last commits of
a key's session, raw and decoded, so the next turn lock of the key need not send them
again, nor Python decode them again.

Kept commits are used only when the lock's script finds that the session's last stored
commit is the last one kept here (it compares the transcript's last element with that
commit's line prefix, `jsonl.commit_prefix`; commit ids are random per attempt). Any
other writer changes that last element first: another process's commit, a delete, a
reset to another session, a Redis that lost writes. The script then sends the commits
again, as without this cache. A commit of this process appends its own line here once
Redis stored it; a commit that failed or was refused forgets the key.

Bounded: the least recently used keys are dropped once `max_bytes` of commit lines are
kept (decoded records cost a few times their bytes).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from core.model import ChatMessage
from core.store import jsonl

log = logging.getLogger("chatlane.store")

MAX_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class _Tail:
    session_id: str
    lines: list[bytes]
    """The session's last `asked` commits (or all, if fewer), oldest first."""
    asked: int
    decoded: dict[int, list[ChatMessage]] = field(default_factory=dict)
    """id(line) -> its records, for lines decoded once (a line is never changed)."""
    size: int = 0


class WarmTails:
    """Per key: its session's last commits as this process last saw them (see the module doc)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._by_key: OrderedDict[str, _Tail] = OrderedDict()
        self._keys: dict[str, str] = {}
        """Session id -> the key it is kept under."""
        self._size = 0

    def expect(self, key: str, asked: int) -> bytes:
        """The line prefix the transcript's last commit has if the kept commits of `key`
        are current; b'' when nothing (or too little: fewer than `asked`) is kept."""
        tail = self._by_key.get(key)
        if tail is None or not tail.lines or tail.asked < asked:
            return b""
        commit_id = _commit_id(tail.lines[-1])
        return b"" if commit_id is None else jsonl.commit_prefix(commit_id)

    def lines(self, key: str) -> tuple[str, list[bytes], int] | None:
        """(session id, kept lines, asked) of `key`, once the lock confirmed them current."""
        tail = self._by_key.get(key)
        if tail is None:
            return None
        self._by_key.move_to_end(key)
        return tail.session_id, tail.lines, tail.asked

    def keep(self, key: str, session_id: str, lines: list[bytes], asked: int) -> None:
        """`lines` are the last `asked` commits of `session_id` (or all of them) as now stored."""
        old = self._by_key.get(key)
        decoded: dict[int, list[ChatMessage]] = {}
        self.forget(key)
        if old is not None and old.session_id == session_id:
            kept = {id(line) for line in lines}
            decoded = {k: v for k, v in old.decoded.items() if k in kept}
        tail = _Tail(session_id, lines, asked, decoded, sum(len(line) for line in lines))
        self._by_key[key] = tail
        self._keys[session_id] = key
        self._size += tail.size
        while self._size > self.max_bytes and self._by_key:
            self.forget(next(iter(self._by_key)))

    def committed(
        self,
        key: str,
        session_id: str,
        line: bytes,
        base: tuple[list[bytes], int] | None,
        limits: tuple[int, int],
    ) -> None:
        """This process stored `line` as `session_id`'s newest commit. `base`: the session's
        commits as the turn lock read them (lines, asked), if it read that session;
        `limits`: (commits a lock reads, commits a transcript keeps)."""
        tail = self._by_key.get(key)
        if tail is not None and tail.session_id == session_id:
            lines, asked = tail.lines, tail.asked
        elif base is not None:
            lines, asked = base
        else:
            self.forget(key)
            return
        asked = min(asked, limits[0])
        most = min(asked, limits[1])
        self.keep(key, session_id, [*lines, line][-most:] if most > 0 else [], asked)

    def records(self, session_id: str, lines: list[bytes], n: int) -> list[ChatMessage] | None:
        """The last `n` records of `lines`, decoding each line once while `key` is kept;
        None when `lines` are not the kept ones (the caller decodes them itself)."""
        tail = self._by_key.get(self._keys.get(session_id, ""))
        if tail is None or tail.session_id != session_id or tail.lines is not lines:
            return None
        out: list[list[ChatMessage]] = []
        count = 0
        for line in reversed(lines):
            records = tail.decoded.get(id(line))
            if records is None:
                try:
                    records = jsonl.decode_line(line)[0]
                except (ValueError, UnicodeDecodeError):
                    log.warning(
                        "transcript of %s has an unreadable record (%d bytes); skipped", session_id, len(line)
                    )
                    records = []
                tail.decoded[id(line)] = records
            out.append(records)
            count += len(records)
            if count >= n:
                break
        flat = [r for records in reversed(out) for r in records]
        return flat[-n:]

    def forget(self, key: str) -> None:
        old = self._by_key.pop(key, None)
        if old is not None:
            self._size -= old.size
            if self._keys.get(old.session_id) == key:
                del self._keys[old.session_id]


def _commit_id(line: bytes) -> str | None:
    """The commit id a commit line starts with (`{"commit":"<id>"`), without decoding it."""
    head = b'{"commit":"'
    if not line.startswith(head):
        return None
    end = line.find(b'"', len(head))
    return line[len(head) : end].decode("ascii", "replace") if end > 0 else None
