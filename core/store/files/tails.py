"""What the file store remembers of recently used transcripts, so a hot conversation
does not re-read and re-parse its history every turn.

Each remembered transcript holds its last records and its last commit's progress, and
the file size they were read at. A read first stats the file: same size, the memory is
current; larger (another process committed), only the new bytes are read; smaller or
replaced, it is read again from the end. Commits of this process extend the memory
directly. A least-recently-used bound keeps memory flat however many sessions exist.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from core.model import ChatMessage
from core.store import jsonl

DEFAULT_KEEP = 64
"""Records kept per transcript; grows to the largest `n` asked for (history_limit)."""
DEFAULT_BUDGET = 64 * 1024 * 1024
"""Characters of record content kept over all transcripts: a few conversations of huge
messages must not hold the memory that thousands of ordinary ones would use."""


@dataclass(slots=True)
class _Tail:
    inode: int
    size: int
    """Bytes of the file read so far (always at a line end)."""
    records: deque[ChatMessage]
    progress: jsonl.Progress | None
    weight: int = 0
    """Characters of content in `records`."""


class Tails:
    def __init__(self, capacity: int = 2048, budget: int = DEFAULT_BUDGET) -> None:
        self.capacity = capacity
        self.budget = budget
        self.keep = DEFAULT_KEEP
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._weight = 0
        """Sum of the remembered tails' weights."""

    def __len__(self) -> int:
        return len(self._tails)

    def read(self, path: str, n: int) -> tuple[list[ChatMessage], jsonl.Progress | None]:
        """The last `n` records of `path` and its last commit's progress (blocking, but
        page-cache cheap: one stat when nothing changed)."""
        if n > self.keep:
            self.keep = n
            self._tails.clear()  # kept too few records for this caller
            self._weight = 0
        tail = self._tails.get(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.forget(path)
            return [], None
        if tail is None or tail.inode != st.st_ino or tail.size != st.st_size:
            tail = self._refresh(path, tail)
        else:
            self._tails.move_to_end(path)
        records = list(tail.records)[-n:] if n > 0 else []
        self._trim()
        return records, tail.progress

    def committed(
        self, path: str, start: int, end: int, records: Sequence[ChatMessage], progress: jsonl.Progress
    ) -> None:
        """This process appended a commit at [start, end) of `path`."""
        tail = self._tails.get(path)
        if tail is None:
            return
        if tail.size != start:
            self.forget(path)  # someone else wrote in between: read it again next time
            return
        self._extend(tail, list(records), progress, end)
        self._trim()

    def forget(self, path: str) -> None:
        tail = self._tails.pop(path, None)
        if tail is not None:
            self._weight -= tail.weight

    def _refresh(self, path: str, tail: _Tail | None) -> _Tail:
        """Bring `tail` up to the file: read only what was appended, or all of the end."""
        fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if tail is not None and tail.inode == st.st_ino and tail.size <= st.st_size:
                records, progress, end = jsonl.read_forward(fd, tail.size, st.st_size)
                self._extend(tail, records, progress, end)
                self._tails.move_to_end(path)
                return tail
            records, progress, _whole = jsonl.tail_fd(fd, st.st_size, self.keep, name=os.path.basename(path))
            # Only whole lines count: a torn last line is not part of what was read.
            end = st.st_size
            if end and os.pread(fd, 1, end - 1) != b"\n":
                end = _last_line_end(fd, end)
            fresh = _Tail(st.st_ino, end, deque(records, maxlen=self.keep), progress)
        finally:
            os.close(fd)
        self._remember(path, fresh)
        return fresh

    def _extend(
        self, tail: _Tail, records: list[ChatMessage], progress: jsonl.Progress | None, end: int
    ) -> None:
        # The weight moves by what is added and what the deque drops (its oldest), not by
        # a sum over the whole tail each commit.
        cap = tail.records.maxlen
        if cap is not None and len(records) >= cap:  # the whole tail is new
            tail.records.extend(records)
            self._reweigh(tail)
        else:
            over = 0 if cap is None else max(0, len(tail.records) + len(records) - cap)
            change = sum(len(r.content) for r in records) - sum(
                len(tail.records[i].content) for i in range(over)
            )
            tail.records.extend(records)
            self._weight += change
            tail.weight += change
        tail.progress = progress or tail.progress
        tail.size = end

    def _remember(self, path: str, tail: _Tail) -> None:
        self.forget(path)
        self._tails[path] = tail
        tail.weight = 0
        self._reweigh(tail)

    def _reweigh(self, tail: _Tail) -> None:
        weight = sum(len(r.content) for r in tail.records)
        self._weight += weight - tail.weight
        tail.weight = weight

    def _trim(self) -> None:
        """Forget the least recently used tails past `capacity` or `budget` (the newest
        one too, when it alone is over the budget: it is read from the file each time)."""
        while self._tails and (len(self._tails) > self.capacity or self._weight > self.budget):
            _, tail = self._tails.popitem(last=False)
            self._weight -= tail.weight


def _last_line_end(fd: int, size: int) -> int:
    """The offset just after the last newline before `size` (0 if none)."""
    pos = size
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        chunk = os.pread(fd, step, pos)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return pos + nl + 1
    return 0
