"""Group commit for the file store: many turns made durable by one round of syncs.

A turn's commit line is appended on the event loop (a small page-cache write), then
the turn waits for a sync round. One round at a time runs on the sync thread, which
fdatasyncs every file written since the last round; turns whose lines were written
while a round ran share the next one. A turn that commits when nothing else is pending
starts a round at once (there is no timer). So a turn costs at most one hand-off to a
thread, and a round's hand-off is shared by every turn in it.

A failed write or sync cuts that file back to where it was and fails only that file's
turns: what they are told failed is not on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from core.store import jsonl
from core.store.files.atomic import sync_folder_of


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a commit line landed: the file's size before (`start`) and after (`end`)
    the append; `stored` is False when the line was already the file's last (a retry)."""

    start: int
    end: int
    stored: bool


@dataclass(slots=True)
class _Pending:
    fd: int
    written: jsonl.Written
    done: asyncio.Future[None]


class Committer:
    """Used from one event loop; `close` waits for the round under way."""

    def __init__(self, ensure_dir: Callable[[str], None]) -> None:
        self._ensure_dir = ensure_dir
        """Makes a missing folder (a new fan-out folder, or a state folder removed while running)."""
        self._pending: list[_Pending] = []
        self._folders: set[str] = set()
        """Files whose folder (a rename or a new name in it) the next round must fsync
        before it acknowledges anything."""
        self._round: asyncio.Task[None] | None = None
        self._sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatlane-sync")

    async def append(self, path: str, line: bytes, commit_id: str) -> Appended:
        """Append `line` durably to `path`; OSError if it could not be (nothing left behind).

        If the caller is cancelled while waiting, the line is still synced (or cut off)
        by its round; callers that must know the outcome shield this call.
        """
        fd = self._open(path)
        try:
            written = jsonl.write_commit(fd, line, commit_id)
        except BaseException:
            os.close(fd)
            raise
        if not written.stored:
            os.close(fd)
            return Appended(written.start, written.end, stored=False)
        await self.sync(fd, written)
        return Appended(written.start, written.end, stored=True)

    async def sync(self, fd: int, written: jsonl.Written) -> None:
        """Make what was just written to `fd` durable in the next round, then close `fd`;
        OSError if it could not be (the file is cut back to `written.start`). The inbox
        shares the rounds of the transcripts (core/store/files/inbox.py)."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(fd, written, done))
        if self._round is None:
            self._round = asyncio.create_task(self._rounds(), name="chatlane group commit")
        await done

    def sync_before_next_round(self, path: str) -> None:
        """The next round fsyncs the folder of `path` before it answers any turn."""
        self._folders.add(path)

    def _open(self, path: str) -> int:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            self._ensure_dir(os.path.dirname(path))
            return os.open(path, flags, 0o600)

    async def _rounds(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                folders, self._folders = self._folders, set()
                # Shielded: a round that started finishes (its files are synced or cut
                # back and closed) even when the store closes mid-round.
                failures = await asyncio.shield(
                    loop.run_in_executor(self._sync_thread, _sync, batch, sorted(folders))
                )
                if folders and any(f is not None for f in failures):
                    self._folders |= folders  # not known to be durable: the next round tries again
                for item, failure in zip(batch, failures, strict=True):
                    if item.done.done():
                        continue  # its turn was cancelled; the outcome stands on disk
                    if failure is None:
                        item.done.set_result(None)
                    else:
                        item.done.set_exception(failure)
        finally:
            self._round = None

    async def close(self) -> None:
        while self._round is not None:
            await asyncio.wait({self._round})
        self._sync_thread.shutdown(wait=True)


def _sync(batch: list[_Pending], folders: list[str]) -> list[OSError | None]:
    """On the sync thread: make the pending folders, then every written file durable, or
    cut the files back; close them. A folder that cannot be synced fails the round."""
    out: list[OSError | None] = []
    folder_failure: OSError | None = None
    for path in folders:
        try:
            sync_folder_of(path)
        except FileNotFoundError:
            pass  # the entry's folder is gone (state folder removed): nothing to keep
        except OSError as exc:
            folder_failure = exc
    for item in batch:
        if folder_failure is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(item.fd, item.written.start)
            os.close(item.fd)
            out.append(folder_failure)
            continue
        try:
            os.fdatasync(item.fd)
            out.append(None)
        except OSError as exc:
            # Not durable, so not stored: cut it off again before saying so.
            with contextlib.suppress(OSError):
                os.ftruncate(item.fd, item.written.start)
            out.append(exc)
        finally:
            os.close(item.fd)
    return out
