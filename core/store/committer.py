"""Group commit for the file store: one thread appends commit lines and makes them
durable, many turns per round.

A turn hands its line to the committer and waits (its one hand-off to a thread). The
committer takes everything that is ready, appends each line to its transcript, then
fdatasyncs each file written, and only then answers every turn of the round. Turns of
different conversations that become ready while a round's syncs run share the next
round; a turn that arrives when nothing else is pending starts a round at once (there
is no timer). A failed write or sync cuts that file back to where it was and fails
only that file's turns: what they were told failed is not on disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core.store import jsonl

log = logging.getLogger("chatlane.store")


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a commit line landed: the file's size before (`start`) and after (`end`)
    the append; `stored` is False when the line was already the file's last (a retry)."""

    start: int
    end: int
    stored: bool


@dataclass(slots=True)
class _Item:
    path: str
    line: bytes
    commit_id: str
    done: concurrent.futures.Future[Appended] = field(default_factory=concurrent.futures.Future)


class Committer:
    """One committer thread per store; `close` drains it."""

    def __init__(self, ensure_dir: Callable[[str], None], name: str = "chatlane-commit") -> None:
        self._ensure_dir = ensure_dir
        """Makes a missing folder (a new fan-out folder, or a state folder removed while running)."""
        self._name = name
        self._queue: deque[_Item] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def append(self, path: str, line: bytes, commit_id: str) -> Appended:
        """Append `line` durably to `path`; OSError if it could not be (nothing left behind)."""
        item = _Item(path, line, commit_id)
        with self._ready:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._ready.notify()
        return await asyncio.wrap_future(item.done)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
            self._round(batch)

    def _open(self, path: str) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            self._ensure_dir(os.path.dirname(path))
            return os.open(path, flags, 0o600)

    def _round(self, batch: list[_Item]) -> None:
        """Write every line, then sync every file written, then answer."""
        written: list[tuple[_Item, int, jsonl.Written]] = []
        for item in batch:
            try:
                fd = self._open(item.path)
            except OSError as exc:
                item.done.set_exception(exc)
                continue
            try:
                written.append((item, fd, jsonl.write_commit(fd, item.line, item.commit_id)))
            except OSError as exc:
                os.close(fd)
                item.done.set_exception(exc)
        for item, fd, w in written:
            try:
                if w.stored:
                    os.fdatasync(fd)
            except OSError as exc:
                # Not durable, so not stored: cut it off again before saying so.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, w.start)
                item.done.set_exception(exc)
            else:
                item.done.set_result(Appended(w.start, w.end, w.stored))
            finally:
                os.close(fd)
