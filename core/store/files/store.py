"""The embedded store: one JSON file per session key, `filelock` between processes.

The layout on disk is in layout.py. Every operation touches a fixed number of files, so
it costs the same at 100 sessions and at 100,000. Entry writes are atomic (temp file,
fsync, os.replace, fsync of the folder; for a minted session the folder fsync is done by
the first commit's sync round, before anything depending on it is acknowledged) and
happen only when a session is minted or reset: after a kill -9 at any point every entry
is either the old or the new one.

A turn's only write is its commit: one line appended to the session's transcript and
fdatasync'd (jsonl.py), cut back off if the write fails, so a turn is stored whole or
not at all. The entry's turn count and last interaction are read from the last commit
line, so they always equal what was committed and need no write of their own.

Exclusion: one lock file per key, its turn lock, held for a whole turn and by every
write of the key's entry (a write outside a turn takes it for the write alone, so it
waits for a running turn; chatlane's own writes all happen inside turns). It is
filelock's lock on a descriptor opened for it alone (`lock_descriptor`: no lock
object, path handling or fork tracking per call), so flock excludes even two tasks of
one process. It is an OS lock that dies with its process, so it needs no expiry: a
paused holder keeps it, and nobody else commits for that key meanwhile. Its fencing
token (a counter in the lock file, raised on every acquisition) is still checked at
commit, so the commit is fenced on every backend.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from filelock import lock_descriptor, unlock_descriptor

from core.model import (
    Admission,
    ChatMessage,
    Damaged,
    Fenced,
    FireClaim,
    FireMark,
    FreshCheck,
    Listing,
    Minter,
    Page,
    RequestClaim,
    SessionEntry,
    SessionKey,
    StoreError,
    TurnCommit,
    TurnLease,
)
from core.store import jsonl
from core.store.base import Approvals
from core.store.entries import (
    find_key,
)
from core.store.files import blobs, paging
from core.store.files.approvals import AsyncFileApprovals, FileApprovals
from core.store.files.committer import Committer
from core.store.files.deliveries import FileDeliveries, WouldWait, without_waiting
from core.store.files.fires import FileFires
from core.store.files.inbox import FileInbox
from core.store.files.layout import CorruptEntry, FileLayout, Signature, advanced, signature
from core.store.files.tails import Tails

log = logging.getLogger("chatlane.store")

INBOX_COMMITS_READ = 16
"""Commits read back for item ids they answered. A crash can leave at most one commit per
conversation without its `done` hint in the inbox file (the hint is written before the
conversation's next turn), so a few are plenty."""
ENTRY_CACHE = 4096
"""Entries remembered by their file's stat signature (minted/reset files are replaced)."""

T = TypeVar("T")
_STATS_ON_LOOP = 64
"""Stop flags stat'ed on the loop; more go to the pool in one job (a stat is a few µs)."""


class FileStore:
    """`SessionStore` on the local filesystem; safe for many processes on one host.

    It has a `layout` (paths, entry files, their locks and quarantine: layout.py), a
    committer (group-committed transcript appends), cached transcript tails, and the
    delivery markers and sender counters (deliveries.py).
    """

    def __init__(self, root: Path | str, *, workers: int = 4) -> None:
        self.layout = FileLayout(root)
        self.root = self.layout.root
        # Few threads: each store call is short, and more threads mostly fight over the
        # GIL (measured: 391 turns/s with 16 workers, 487 with 4, at 10 concurrent
        # conversations). No call blocks for long: turn locks are polled on the loop.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chatlane-store")
        self._held: dict[str, tuple[int, asyncio.Task[Any] | None]] = {}
        """Key -> (the descriptor of its turn lock file, the task that took it), while
        this process holds it."""
        self._committer = Committer(self.layout.ensure_dir)
        self._tails = Tails()
        """Recently used transcripts' tails (used on the event loop only)."""
        self._entries: OrderedDict[str, tuple[Signature, SessionEntry]] = OrderedDict()
        """Key -> (stat signature, entry) of entry files recently read or written here
        (event loop only)."""
        try:
            self.layout.make_folders()
            self._deliveries = FileDeliveries(self.root)
            self._approvals = AsyncFileApprovals(FileApprovals(self.root), self._run)
            self._fires = FileFires(self.root)
        except OSError as exc:
            raise StoreError(f"cannot use state directory {self.root}: {exc.strerror}") from exc
        self.inbox = FileInbox(self.root, self.layout.quarantine, self._committer, self._answered_of)
        """The durable inbox (core/store/files/inbox.py); commits mark its items done."""

    def _answered_of(self, key: str) -> set[str]:
        """Inbox items the recent commits of `key`'s current session answered (blocking)."""
        try:
            entry = self.layout.read_stored(self.layout.entry_file(key), key)
        except CorruptEntry:
            return set()
        if entry is None:
            return set()
        return jsonl.recent_answered(self.layout.transcript_file(entry.session_id), INBOX_COMMITS_READ)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except OSError as exc:
            raise _store_error(exc) from exc

    async def _run_here_first(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the loop when none of its locks is held elsewhere (small
        page-cache work, as the inbox's), else on a store thread, where it waits."""
        try:
            return without_waiting(fn, *args)
        except WouldWait:
            return await self._run(fn, *args)
        except OSError as exc:
            raise _store_error(exc) from exc

    @property
    def approvals(self) -> Approvals:
        return self._approvals

    # --------------------------------------------------------------- protocol
    async def get(self, key: SessionKey) -> SessionEntry | None:
        # On the loop: two stats when nothing changed, small page-cache reads when it did.
        try:
            entry = self._stored_entry(key)
            if entry is None:
                return None
            _records, progress = self._tails.read(self.layout.transcript_file(entry.session_id), 0)
        except CorruptEntry:
            # Reported and quarantined by the next locked operation on this key,
            # which re-reads first: a concurrent rewrite may already have mended it.
            return None
        except OSError as exc:
            raise _store_error(exc) from exc
        return advanced(entry, progress)

    def _stored_entry(self, key: str) -> SessionEntry | None:
        """The entry file of `key` as minted or reset, re-read only when it was replaced."""
        path = self.layout.entry_file(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._entries.pop(key, None)
            return None
        sig = signature(st)
        cached = self._entries.get(key)
        if cached is not None and cached[0] == sig:
            self._entries.move_to_end(key)
            return cached[1]
        entry = self.layout.read_stored(path, key)
        if entry is not None:
            self._remember(key, sig, entry)
        return entry

    def _remember(self, key: str, sig: Signature, entry: SessionEntry) -> None:
        """Cache `entry` as the content of the entry file with signature `sig`: a writer
        remembers what it wrote, so the turn's next reads (its fence check) need no parse."""
        self._entries[key] = (sig, entry)
        self._entries.move_to_end(key)
        if len(self._entries) > ENTRY_CACHE:
            self._entries.popitem(last=False)

    async def reserve(self, key: SessionKey, is_fresh: FreshCheck, mint: Minter) -> tuple[SessionEntry, bool]:
        # On the loop but for the entry's fsync (a small read, a small write and a rename,
        # as the turn lock and the transcript append are): one hand-off to a thread per
        # new conversation. A minted entry's folder is fsync'd by the sync round of the
        # next commit (the first thing that depends on it being durable), not here: one
        # fsync less on a new conversation's first turn, and the folder syncs of a round
        # share one journal commit. The entry file itself is fsync'd before its rename.
        path = self.layout.entry_file(key)
        async with self._entry_writer(key):
            try:
                try:
                    current = self.layout.read(path, key)
                except CorruptEntry:  # quarantined and recovered on a thread: rare, and it syncs
                    current = await self._run(self.layout.load_locked, key)
                if current is not None and is_fresh(current):
                    return current, False
                entry = mint(key)
                written = await self.layout.write_on_loop(path, entry, self._fsync)
            except OSError as exc:
                raise _store_error(exc) from exc
            self._remember(key, written, entry)  # still under the lock: nobody replaced it since
        self._committer.sync_before_next_round(path)
        return entry, True

    async def _fsync(self, fd: int) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, os.fsync, fd)

    async def set_model(self, key: SessionKey, session_id: str, model: str | None) -> SessionEntry | None:
        def op() -> tuple[SessionEntry, Signature] | None:
            current = self.layout.load_locked(key)
            if current is None or current.session_id != session_id:
                return None
            updated = replace(current, model=model, updated_at=time.time())
            return updated, self.layout.write(self.layout.entry_file(key), updated)

        async with self._entry_writer(key):
            done = await self._run(op)
            if done is None:
                return None
            self._remember(key, done[1], done[0])
            return done[0]

    async def reset(self, key: SessionKey, mint: Minter) -> SessionEntry:
        def op() -> tuple[SessionEntry, Signature]:
            self.layout.load_locked(key)  # a damaged entry is quarantined, not overwritten
            entry = mint(key)
            return entry, self.layout.write(self.layout.entry_file(key), entry)

        async with self._entry_writer(key):
            entry, written = await self._run(op)
            self._remember(key, written, entry)
            return entry

    async def delete(self, key: SessionKey, session_id: str) -> bool:
        def op() -> bool:
            current = self.layout.load_locked(key)
            if current is None or current.session_id != session_id:
                return False
            # The transcript goes first: once the entry is gone nothing of the session
            # is left (a crash in between leaves an entry with an empty history, never
            # a transcript that no entry points to).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.layout.transcript_file(session_id))
            os.unlink(self.layout.entry_file(key))
            return True

        async with self._entry_writer(key):
            return await self._run(op)

    @contextlib.asynccontextmanager
    async def _entry_writer(self, key: SessionKey) -> AsyncIterator[None]:
        """Entry writes of `key` exclude each other by its turn lock: at once when this
        task holds it (a turn: every write chatlane itself makes), else under the lock
        taken for the write alone (waiting for a running turn). One lock file per key,
        not a second one per entry: a new conversation creates one inode less."""
        held = self._held.get(key)
        if held is not None and held[1] is asyncio.current_task():
            yield
            return
        async with self.lock_turn(key):
            yield

    async def list(self) -> Listing:
        return await self._run(self._scan)

    async def list_page(
        self, after: str, limit: int, keep: Callable[[SessionEntry], bool] | None = None, budget: int = 5000
    ) -> Page:
        return await self._run(
            paging.scan_page, self.layout.sessions, self.layout.read, after, limit, keep, budget
        )

    def _scan(self) -> Listing:
        entries: list[SessionEntry] = []
        damaged: list[Damaged] = []
        for path in sorted(self.layout.sessions.glob("*/*/*.json")):
            try:
                entry = self.layout.read(path)
            except CorruptEntry as bad:
                damaged.append(Damaged(str(path), bad.reason, find_key(bad.raw)))
                continue
            except OSError as exc:  # one unreadable entry must not hide all the others
                damaged.append(Damaged(str(path), f"unreadable: {exc.strerror or exc}"))
                continue
            if entry is not None:
                entries.append(entry)
        for path in sorted(self.layout.quarantine.glob("*")):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            damaged.append(Damaged(str(path), "quarantined", find_key(raw)))
        return Listing(entries, damaged)

    async def commit(self, commit: TurnCommit) -> None:
        key = commit.lease.key
        path = self.layout.transcript_file(commit.session_id)
        line = jsonl.encode_commit(commit.commit_id, commit.turns, commit.at, commit.records, commit.answered)
        try:
            self._check_fence(commit)  # on the loop: a pread and a cached entry
        except Fenced:
            log.warning("commit of a turn of %s refused (fenced at token %d)", key, commit.lease.token)
            raise
        except OSError as exc:
            raise _store_error(exc) from exc
        commit.lease.committing = True
        try:
            done = await self._committer.append(path, line, commit.commit_id)
        except OSError as exc:
            self._tails.forget(path)
            raise _store_error(exc) from exc
        if done.stored:
            progress = jsonl.Progress(commit.commit_id, commit.turns, commit.at)
            self._tails.committed(path, done.start, done.end, commit.records, progress)
        try:
            await self.inbox.answered(key, commit.answered)
        except StoreError as exc:  # only a hint: the commit line already says it
            log.warning("inbox of %s: done hint not written: %s", key, exc)

    def _check_fence(self, commit: TurnCommit) -> None:
        """`Fenced` unless this process holds the key's turn lock at the commit's token and
        the key still maps to the commit's session."""
        key = commit.lease.key
        held = self._held.get(key)
        current = _read_token(held[0]) if held is not None else None
        if current != commit.lease.token:
            raise Fenced(f"turn lock of {key} is at token {current}, the commit holds {commit.lease.token}")
        try:
            entry = self._stored_entry(key)
        except CorruptEntry as bad:  # entry writers hold the turn lock, as this process does
            entry = self.layout.quarantine_and_recover(key, bad)
        if entry is None or entry.session_id != commit.session_id:
            raise Fenced(f"{key} no longer maps to session {commit.session_id}")

    async def tail(self, session_id: str, n: int) -> builtins.list[ChatMessage]:
        path = self.layout.transcript_file(session_id)
        try:
            return self._tails.read(path, n)[0]
        except OSError as exc:
            raise _store_error(exc) from exc

    @contextlib.asynccontextmanager
    async def lock_turn(self, key: SessionKey) -> AsyncIterator[TurnLease]:
        path = self.layout.lock_file(key, "turn")
        # Poll with non-blocking attempts: a turn can last minutes, and a thread blocked
        # per waiting key would starve the pool. An attempt is an open and a flock that
        # never waits, cheap enough for the event loop.
        delay = 0.001
        while (held := self._try_turn_lock(path)) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        fd, token = held
        self._held[key] = (fd, asyncio.current_task())
        try:
            yield TurnLease(key, token)
        finally:
            del self._held[key]
            try:
                unlock_descriptor(fd)
            finally:
                os.close(fd)

    def _try_turn_lock(self, path: str) -> tuple[int, int] | None:
        """(descriptor, fencing token) if the lock was free; None if it is held."""
        try:
            folder = os.path.dirname(path)
            fd = self.layout.in_dir(folder, lambda: os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot open turn lock {os.path.basename(path)}: {exc.strerror}") from exc
        try:
            if not lock_descriptor(fd, blocking=False):
                os.close(fd)
                return None
            # Not fsync'd: after a power loss no holder is left alive to be fenced out.
            token = (_read_token(fd) or 0) + 1
            os.pwrite(fd, b"%020d" % token, 0)  # ENOSPC for a new key's first token on a full disk
        except BaseException as exc:
            os.close(fd)  # closing the descriptor also drops a lock taken on it
            if isinstance(exc, OSError):
                raise _store_error(exc) from exc
            raise
        return fd, token

    # ------------------------------------------------------------ attachments
    async def put_blobs(self, session_id: str, data: Mapping[str, bytes]) -> None:
        if data:
            await self._run(blobs.put, self.layout.blobs, session_id, data, self._ensure_blob_dir)

    async def put_blob_files(self, session_id: str, files: Mapping[str, Path]) -> None:
        for digest, src in files.items():  # one at a time: each is copied in 1 MiB chunks
            await self._run(blobs.put_file, self.layout.blobs, session_id, digest, src, self._ensure_blob_dir)

    def _ensure_blob_dir(self, d: Path) -> None:
        self.layout.ensure_dir(str(d))

    async def get_blobs(self, session_id: str, digests: Sequence[str]) -> dict[str, bytes]:
        if not digests:
            return {}
        return await self._run(blobs.get, self.layout.blobs, session_id, digests)

    async def prune_session(self, session_id: str) -> None:
        path = self.layout.transcript_file(session_id)

        def op() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            blobs.prune(self.layout.blobs, session_id)

        await self._run(op)

    # --------------------------------------------- deliveries and limits (deliveries.py)
    async def mark_delivered(self, ids: Sequence[str], window_s: float) -> int:
        return await self._run(self._deliveries.mark_delivered, list(ids), window_s)

    async def claim_request(
        self, request_id: str, fingerprint: str, owner: str, lease_s: float, window_s: float
    ) -> RequestClaim:
        return await self._run_here_first(
            self._deliveries.claim_request, request_id, fingerprint, owner, lease_s, window_s
        )

    async def renew_request(self, request_id: str, owner: str, lease_s: float) -> bool:
        return await self._run_here_first(self._deliveries.renew_request, request_id, owner, lease_s)

    async def finish_request(
        self, request_id: str, owner: str, fingerprint: str, answer: bytes, window_s: float
    ) -> None:
        await self._run_here_first(self._deliveries.finish_request, request_id, owner, fingerprint, answer)

    async def release_request(self, request_id: str, owner: str) -> None:
        await self._run_here_first(self._deliveries.release_request, request_id, owner)

    async def count_message(self, sender: str, per_minute: int, per_day: int) -> Admission:
        return await self._run(self._deliveries.count_message, sender, per_minute, per_day)

    # ------------------------------------------- scheduled fires (core/store/files/fires.py)
    async def claim_fire(self, schedule: str, due: float, token: str, lease_s: float) -> FireClaim:
        return await self._run(self._fires.claim, schedule, due, token, lease_s)

    async def renew_fire(self, schedule: str, due: float, token: str, lease_s: float) -> bool:
        return await self._run(self._fires.renew, schedule, due, token, lease_s)

    async def finish_fire(self, schedule: str, due: float, token: str, outcome: str) -> None:
        await self._run(self._fires.finish, schedule, due, token, outcome)

    async def fire_mark(self, schedule: str) -> FireMark | None:
        return await self._run(self._fires.mark, schedule)

    async def advance_fire_mark(self, schedule: str, mark: FireMark) -> FireMark:
        return await self._run(self._fires.advance, schedule, mark)

    async def save_schedule(self, name: str, spec: bytes) -> None:
        await self._run(self._fires.save, name, spec)

    async def saved_schedules(self) -> dict[str, bytes]:
        return await self._run(self._fires.saved_all)

    async def drop_schedule(self, name: str) -> None:
        await self._run(self._fires.drop, name)

    async def request_stop(self, key: SessionKey) -> None:
        """One byte appended (O_APPEND: atomic between processes); no fsync, it is a signal."""
        path = self.layout.lock_file(key, "stop")

        def op() -> None:
            self.layout.ensure_dir(os.path.dirname(path))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"s")
            finally:
                os.close(fd)

        await self._run(op)

    async def stop_requests(self, key: SessionKey) -> int:
        # One stat of a small file: cheap enough for the loop, and polled while a turn runs.
        try:
            return os.stat(self.layout.lock_file(key, "stop")).st_size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"cannot read the stop flag: {exc.strerror or exc}") from exc

    async def stop_requests_many(self, keys: Sequence[SessionKey]) -> dict[SessionKey, int]:
        paths = [(key, self.layout.lock_file(key, "stop")) for key in keys]

        def op() -> dict[SessionKey, int]:
            counts: dict[SessionKey, int] = {}
            for key, path in paths:
                try:
                    counts[key] = os.stat(path).st_size
                except FileNotFoundError:
                    counts[key] = 0
            return counts

        if len(paths) <= _STATS_ON_LOOP:
            try:
                return op()
            except OSError as exc:
                raise StoreError(f"cannot read the stop flags: {exc.strerror or exc}") from exc
        return await self._run(op)

    async def close(self) -> None:
        await self._committer.close()
        self.inbox.close()
        self._pool.shutdown(wait=True)
        self._deliveries.close()


def _store_error(exc: OSError) -> StoreError:
    log.error("store I/O failed: %s", exc, exc_info=True)
    return StoreError(f"store I/O failed: {exc.strerror or exc}")


def _read_token(fd: int) -> int | None:
    raw = os.pread(fd, 20, 0)
    return int(raw) if raw.isdigit() else None
