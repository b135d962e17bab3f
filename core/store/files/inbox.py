"""The file store's durable inbox: one small append-only file per conversation with
pending items, and the OS lock that says which process is alive.

    inbox/ab/<sha256(key)>.jsonl     the conversation's inbox; empty (truncated) once
                                     nothing in it is pending and removed a minute later,
                                     so the non-empty files ARE the index of keys with
                                     pending items (a restart never lists sessions)
    inbox/parked/<sha256(key)>.jsonl items parked as poison, kept for `sessions show`
    inbox/owners/<owner>.lock        held (flock) by its process for its whole life
    quarantine/inbox-<hash>.<ns>     damaged inbox lines, moved aside and reported

Lines, each one JSON object: `{"add": item, "owner": o}` (an accepted message),
`{"own": [ids], "owner": o}` (adopted), `{"try": id}` (a turn started on it),
`{"answer": id, "answer_ids": [m1, m2], "answer_id": m1}` (its answer streams into
platform messages m1, m2, in order; the last such line counts; a line with only
`answer_id`, written before answers had several messages, names one),
`{"done": [ids]}` and `{"park": [ids]}`. An item's place (`seq`) is its line's order.

Answered = committed: a turn's commit line in the transcript names the items it
answered (`"answered": [...]`, written in the one durable append of the commit), so the
pending set is the added items minus those named by `done`/`park` lines here minus
those named by the recent commits of the key's current session. The `done` line the
store appends after a commit is only a hint that lets the file be emptied once
nothing is pending; a crash before it changes nothing.

Accept = durable: an `add` line is appended under an exclusive flock of the file (which
also orders it against removal: a writer that finds its descriptor unlinked opens the
new file) and made durable by the transcripts' group commit before `append` returns.

Ownership: an item belongs to the owner of its last `add`/`own` line. An owner is dead
when its lock file is missing or can be locked by someone else (the OS drops a flock
when its process dies, kill -9 included): then `adopt` may take its items.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from core.model import InboxItem, InboxView, SessionKey, StoreError
from core.store import jsonl
from core.store.files import inbox_file
from core.store.files.committer import Committer
from core.store.files.layout import mkdirs

log = logging.getLogger("chatlane.inbox")

EMPTY_KEEP_S = 60.0
"""An emptied inbox file is kept (truncated) this long before the scan removes it, so a
busy conversation does not create and fsync a new name in the folder for every message;
the index (`keys`) skips empty files."""
COMPACT_BYTES = 64 * 1024
"""An inbox file that never empties (a conversation always busy) is rewritten with only
its pending items once it grows past this, so reading it stays cheap."""

AnsweredOf = Callable[[SessionKey], set[str]]
"""Key -> item ids its current session's recent commits answered (reads the transcript)."""


class FileInbox:
    """`Inbox` for `FileStore`; used from one event loop (small page-cache I/O on it, the
    fsyncs on the committer's sync thread)."""

    def __init__(self, root: Path, quarantine: Path, committer: Committer, answered_of: AnsweredOf) -> None:
        self.root = root / "inbox"
        self._quarantine = quarantine
        self._committer = committer
        self._answered_of = answered_of
        self.owner = uuid.uuid4().hex
        self.renew_every_s = float("inf")  # the OS lock lives as long as the process
        self._owner_fd: int | None = None

    # ------------------------------------------------------------------ paths
    def _path(self, key: str) -> str:
        h = _digest(key)
        return f"{self.root}/{h[:2]}/{h}.jsonl"

    def _parked_path(self, key: str) -> str:
        return f"{self.root}/parked/{_digest(key)}.jsonl"

    def _owner_path(self, owner: str) -> str:
        return f"{self.root}/owners/{owner}.lock"

    # -------------------------------------------------------------- protocol
    async def heartbeat(self) -> None:
        self._hold_owner_lock()

    def lease_held(self) -> bool:
        return True  # the owner lock is held until the process dies: nobody adopts before

    def forget_lapse(self) -> None:
        return None

    async def owned(self, key: SessionKey, item_ids: Sequence[str]) -> bool:
        return True  # while this process lives its flock is held: nobody adopts its items

    async def append(self, item: InboxItem) -> InboxItem:
        self._hold_owner_lock()
        path = self._path(item.key)
        line = inbox_file.encode_line({"add": item.to_json(), "owner": self.owner})
        fresh = not _exists(path)  # a new name in the folder: its fsync is due too
        async with self._locked(path, create=True) as fd:
            fold = inbox_file.fold(fd)
            if item.item_id in fold.items:  # a retried append: stored once
                return fold.items[item.item_id]
            seq = len(fold.items) + 1
            written = inbox_file.append_lines(fd, line)
            dup = os.dup(fd)  # the committer closes its own descriptor after the sync
        if fresh:
            self._committer.sync_before_next_round(path)
        try:
            await self._committer.sync(dup, written)
        except OSError as exc:
            raise StoreError(f"inbox write failed: {exc.strerror or exc}") from exc
        return replace(item, owner=self.owner, seq=seq)

    async def keys(self) -> list[SessionKey]:
        def scan() -> list[SessionKey]:
            found: list[SessionKey] = []
            now = time.time()
            for path in sorted(self.root.glob("[0-9a-f][0-9a-f]/*.jsonl")):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if st.st_size == 0:
                    if now - st.st_mtime > EMPTY_KEEP_S:
                        inbox_file.remove_if_empty(str(path))
                    continue
                key = inbox_file.first_key(path)
                if key is not None:
                    found.append(key)
            return found

        return await asyncio.to_thread(scan)

    async def items(self, key: SessionKey) -> InboxView:
        path = self._path(key)
        answered = await asyncio.to_thread(self._answered_of, key)
        async with self._locked(path) as fd:
            if fd < 0:
                return InboxView([], self._parked(key))
            fold = inbox_file.fold(fd)
            bad = len(fold.bad)
            if fold.bad:
                self._quarantine_lines(key, fd, fold)
            pending = fold.pending(answered)
        return InboxView(pending, self._parked(key), bad)

    async def adopt(self, key: SessionKey, item_ids: Sequence[str]) -> list[str]:
        self._hold_owner_lock()
        path = self._path(key)
        async with self._locked(path) as fd:
            if fd < 0:
                return []
            fold = inbox_file.fold(fd)
            alive: dict[str, bool] = {self.owner: True}
            mine: list[str] = []
            taken: list[str] = []
            for item_id in item_ids:
                item = fold.items.get(item_id)
                if item is None or item_id in fold.closed:
                    continue
                if item.owner == self.owner:
                    mine.append(item_id)
                    continue
                if item.owner not in alive:
                    alive[item.owner] = self._owner_alive(item.owner)
                if not alive[item.owner]:
                    taken.append(item_id)
            if taken:
                inbox_file.append_lines(fd, inbox_file.encode_line({"own": taken, "owner": self.owner}))
        return [*mine, *taken]

    async def note(
        self,
        key: SessionKey,
        item_id: str,
        *,
        answer_ids: Sequence[str] | None = None,
        attempt: bool = False,
    ) -> None:
        lines = b""
        if attempt:
            lines += inbox_file.encode_line({"try": item_id})
        if answer_ids is not None:
            lines += inbox_file.answer_line(item_id, answer_ids)
        if not lines:
            return
        # Not fsync'd: these survive a process crash (page cache); after a power loss an
        # answer's messages may be posted anew and an attempt is not counted.
        async with self._locked(self._path(key)) as fd:
            if fd >= 0 and os.fstat(fd).st_size:  # an emptied inbox holds nothing to note
                inbox_file.append_lines(fd, lines)

    async def settle(self, key: SessionKey, item_ids: Sequence[str], *, park: bool = False) -> None:
        if not item_ids:
            return
        path = self._path(key)
        async with self._locked(path) as fd:
            if fd < 0:
                return
            fold = inbox_file.fold(fd)
            if park:
                parked = [fold.items[i] for i in item_ids if i in fold.items]
                self._keep_parked(key, parked)
            fold.closed.update(item_ids)
            if fold.pending():
                written = inbox_file.append_lines(
                    fd, inbox_file.encode_line({"park" if park else "done": list(item_ids)})
                )
            else:
                os.ftruncate(fd, 0)  # nothing pending: out of the index
                written = jsonl.Written(0, 0, stored=True)
            dup = os.dup(fd)
        try:
            await self._committer.sync(dup, written)
        except OSError as exc:
            raise StoreError(f"inbox write failed: {exc.strerror or exc}") from exc

    async def answered(self, key: SessionKey, item_ids: Sequence[str]) -> None:
        """After a stored commit that answered `item_ids`: the `done` hint (no fsync: the
        commit is the fact), and the file goes once nothing in it is pending."""
        if not item_ids:
            return
        path = self._path(key)
        async with self._locked(path) as fd:
            if fd < 0:
                return
            fold = inbox_file.fold(fd)
            fold.closed.update(item_ids)
            pending = fold.pending()
            if not pending:
                os.ftruncate(fd, 0)  # out of the index; not fsync'd: the commit is the fact
            elif os.fstat(fd).st_size > COMPACT_BYTES:
                inbox_file.rewrite(path, pending)
            else:
                inbox_file.append_lines(fd, inbox_file.encode_line({"done": list(item_ids)}))

    def close(self) -> None:
        if self._owner_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._owner_path(self.owner))
            os.close(self._owner_fd)
            self._owner_fd = None

    # ---------------------------------------------------------------- helpers
    @contextlib.asynccontextmanager
    async def _locked(self, path: str, *, create: bool = False) -> AsyncIterator[int]:
        """The file's descriptor under an exclusive flock (-1 if it does not exist and
        `create` is False). Non-blocking attempts on the loop: the lock is only ever
        held for a few small page-cache reads and writes."""
        delay = 0.0005
        while True:
            try:
                flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
                try:
                    fd = os.open(path, flags, 0o600)
                except FileNotFoundError:
                    if not create:
                        yield -1
                        return
                    mkdirs(Path(path).parent)
                    fd = os.open(path, flags, 0o600)
            except OSError as exc:
                raise StoreError(f"cannot open inbox file: {exc.strerror or exc}") from exc
            try:
                while not lock_descriptor(fd, blocking=False):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.02)
                if os.fstat(fd).st_nlink == 0:  # removed while we waited: open the new one
                    continue
                try:
                    yield fd
                except OSError as exc:
                    raise StoreError(f"inbox I/O failed: {exc.strerror or exc}") from exc
                return
            finally:
                with contextlib.suppress(OSError):
                    unlock_descriptor(fd)
                os.close(fd)

    def _parked(self, key: str) -> list[InboxItem]:
        try:
            raw = Path(self._parked_path(key)).read_bytes()
        except FileNotFoundError:
            return []
        out: list[InboxItem] = []
        for line in raw.splitlines():
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                out.append(InboxItem.from_json(json.loads(line)))
        return out

    def _keep_parked(self, key: str, items: list[InboxItem]) -> None:
        if not items:
            return
        path = self._parked_path(key)
        mkdirs(Path(path).parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            jsonl.write_all(fd, b"".join(inbox_file.encode_line(i.to_json()) for i in items))
        finally:
            os.close(fd)

    def _quarantine_lines(self, key: str, fd: int, fold: inbox_file.Fold) -> None:
        """Move damaged lines aside (reported once) and rewrite the file without them."""
        mkdirs(self._quarantine)
        moved = self._quarantine / f"inbox-{_digest(key)}.{time.time_ns()}"
        moved.write_bytes(b"\n".join(fold.bad) + b"\n")
        log.error(
            "inbox of %s had %d damaged records; moved to %s, the rest is kept", key, len(fold.bad), moved
        )
        good = b"".join(line for line in inbox_file.whole_lines(fd) if line.rstrip(b"\n") not in fold.bad)
        os.ftruncate(fd, 0)
        jsonl.write_all(fd, good)
        os.fsync(fd)

    def _hold_owner_lock(self) -> None:
        if self._owner_fd is not None:
            return
        path = self._owner_path(self.owner)
        mkdirs(Path(path).parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        lock_descriptor(fd, blocking=False)
        self._owner_fd = fd

    def _owner_alive(self, owner: str) -> bool:
        """Whether `owner`'s process still holds its lock (a non-blocking flock attempt)."""
        if not owner.isalnum():
            return False
        path = self._owner_path(owner)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            if lock_descriptor(fd, blocking=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # a dead owner's lock: nobody holds it any more
                return False
            return True
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        finally:
            os.close(fd)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _exists(path: str) -> bool:
    return os.path.exists(path)
