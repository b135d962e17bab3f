"""The embedded store: one JSON file per session key, `filelock` between processes.

Layout under the state directory (dirs 0700, files 0600):

    sessions/ab/cd/<sha256(key)>.json   the entry; the key itself is stored inside
    locks/ab/<sha256(key)>.lock         held while an entry is re-read and rewritten
    locks/ab/<sha256(key)>.turn         held for the whole of a turn of that key
    transcripts/<id[:2]>/<id>.jsonl     memory of one session id
    quarantine/                         damaged entries moved aside, never overwritten

Every operation touches a fixed number of files, so it costs the same at 100 sessions
and at 100,000. Writes are atomic (temp file, fsync, os.replace, fsync of the folder):
after a kill -9 at any point every entry is either the old or the new one.

Exclusion: callers in one process are serialised per key by the reserver's asyncio
locks and the lanes; across processes, each critical section takes a *new* FileLock
instance, which opens its own file description, so flock excludes even two threads
of one process (a shared instance would be re-entrant and let both in).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from core.store import jsonl
from core.store.entries import SESSION_ID, entry_from_json, entry_to_json, find_key, recover_entry
from core.types import (
    ChatMessage,
    Damaged,
    FreshCheck,
    Listing,
    Minter,
    SessionEntry,
    SessionKey,
    StoreError,
)

log = logging.getLogger("chatlane.store")

T = TypeVar("T")


class CorruptEntry(Exception):
    def __init__(self, path: Path, reason: str, raw: bytes) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.raw = path, reason, raw


class FileStore:
    """`SessionStore` on the local filesystem; safe for many processes on one host."""

    def __init__(self, root: Path | str, *, workers: int = 4) -> None:
        self.root = Path(root)
        self._sessions = self.root / "sessions"
        self._sessions_str = str(self._sessions)
        self._locks = self.root / "locks"
        self._transcripts = self.root / "transcripts"
        self._quarantine = self.root / "quarantine"
        self._locks_str = str(self._locks)
        self._transcripts_str = str(self._transcripts)
        # Few threads: each store call is short, and more threads mostly fight over the
        # GIL (measured: 391 turns/s with 16 workers, 487 with 4, at 10 concurrent
        # conversations). No call blocks for long: turn locks are polled, and a key lock
        # is held only for one read-and-write.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chatlane-store")
        # Turn locks are taken and released on this one thread: filelock keeps a
        # per-thread registry of held locks, which a release on another thread would
        # never clear (one leaked entry per key ever seen).
        self._turn_lock_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatlane-turn-lock")
        try:
            for d in (self.root, self._sessions, self._locks, self._transcripts, self._quarantine):
                _mkdirs(d)
            self.root.chmod(0o700)
        except OSError as exc:
            raise StoreError(f"cannot use state directory {self.root}: {exc.strerror}") from exc

    # ------------------------------------------------------------------ paths
    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def entry_path(self, key: str) -> Path:
        return Path(self._entry_file(key))

    def _entry_file(self, key: str) -> str:
        # A plain string: pathlib joins cost more than the read itself on the hot path.
        h = self._digest(key)
        return f"{self._sessions_str}/{h[:2]}/{h[2:4]}/{h}.json"

    def _lock_path(self, key: str, kind: str) -> str:
        h = self._digest(key)
        return f"{self._locks_str}/{h[:2]}/{h}.{kind}"

    def transcript_path(self, session_id: str) -> Path:
        return Path(self._transcript_file(session_id))

    def _transcript_file(self, session_id: str) -> str:
        # Session ids are minted here, but an id read back from disk is checked again:
        # nothing that is not 32 hex digits ever becomes part of a path.
        if not SESSION_ID.fullmatch(session_id):
            raise ValueError(f"malformed session id {session_id[:40]!r}")
        return f"{self._transcripts_str}/{session_id[:2]}/{session_id}.jsonl"

    def _ensure_dir(self, d: str) -> None:
        # One stat per call rather than a cache of folders made: a cache would grow
        # with every fan-out folder (65,536 of them) and go stale if one is removed.
        if not os.path.isdir(d):
            _mkdirs(Path(d))
            self.root.chmod(0o700)

    def _in_dir(self, d: str, fn: Callable[[], T]) -> T:
        """`fn()`, which creates a file in `d`; if `d` is missing (first use, or the state
        directory was removed while running), make it and retry once."""
        try:
            return fn()
        except FileNotFoundError:
            if os.path.isdir(d):
                raise
            if not self.root.is_dir():
                log.warning("state directory %s was missing; made it again", self.root)
            self._ensure_dir(d)
            return fn()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run_on(self._pool, fn, *args)

    async def _run_on(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except OSError as exc:
            log.error("store I/O failed: %s", exc, exc_info=True)
            raise StoreError(f"store I/O failed: {exc.strerror or exc}") from exc

    # ---------------------------------------------------------- entry file I/O
    def _read(self, path: Path | str, key: str | None = None) -> SessionEntry | None:
        """The entry at `path` (which must belong to `key` when given); None if absent."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            raw = b""
            while chunk := os.read(fd, 65536):
                raw += chunk
        finally:
            os.close(fd)
        try:
            entry = entry_from_json(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptEntry(Path(path), str(exc), raw) from None
        belongs = entry.key == key if key is not None else self._entry_file(entry.key) == str(path)
        if not belongs:
            raise CorruptEntry(Path(path), "entry holds a key that does not belong in this file", raw)
        return entry

    def _write(self, path: str, entry: SessionEntry) -> None:
        data = json.dumps(entry_to_json(entry), separators=(",", ":")).encode()
        folder, name = os.path.split(path)
        tmp = f"{folder}/.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        fd = self._in_dir(folder, lambda: os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            try:
                # A short write (full disk) must fail here, or a cut entry replaces a good one.
                jsonl.write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _key_lock(self, key: str) -> FileLock:
        path = self._lock_path(key, "lock")
        self._ensure_dir(os.path.dirname(path))
        return FileLock(path, mode=0o600, thread_local=False)

    def _load_locked(self, key: SessionKey) -> SessionEntry | None:
        """Read under the key's file lock; a damaged entry is quarantined and recovered."""
        try:
            return self._read(self._entry_file(key), key)
        except CorruptEntry as bad:
            return self._quarantine_and_recover(key, bad)

    def _quarantine_and_recover(self, key: SessionKey, bad: CorruptEntry) -> SessionEntry | None:
        self._ensure_dir(str(self._quarantine))
        moved = self._quarantine / f"{bad.path.name}.{time.time_ns()}"
        os.replace(bad.path, moved)
        recovered = recover_entry(key, bad.raw)
        log.error(
            "session entry %s is damaged (%s); moved to %s; %s",
            bad.path.name,
            bad.reason,
            moved,
            f"recovered session {recovered.session_id}" if recovered else "nothing recoverable",
        )
        if recovered is not None:
            self._write(str(bad.path), recovered)
        return recovered

    # --------------------------------------------------------------- protocol
    async def get(self, key: SessionKey) -> SessionEntry | None:
        try:
            return await self._run(self._read, self._entry_file(key), key)
        except CorruptEntry:
            # Reported and quarantined by the next locked operation on this key,
            # which re-reads first: a concurrent rewrite may already have mended it.
            return None

    async def reserve(self, key: SessionKey, is_fresh: FreshCheck, mint: Minter) -> tuple[SessionEntry, bool]:
        def op() -> tuple[SessionEntry, bool]:
            with self._key_lock(key):
                current = self._load_locked(key)
                if current is not None and is_fresh(current):
                    return current, False
                entry = mint(key)
                self._write(self._entry_file(key), entry)
                return entry, True

        return await self._run(op)

    async def touch(
        self, key: SessionKey, session_id: str, *, at: float, turns: int = 1
    ) -> SessionEntry | None:
        def op() -> SessionEntry | None:
            with self._key_lock(key):
                current = self._load_locked(key)
                if current is None or current.session_id != session_id:
                    return None
                updated = replace(
                    current,
                    last_interaction_at=at,
                    updated_at=time.time(),
                    turns=current.turns + turns,
                )
                self._write(self._entry_file(key), updated)
                return updated

        return await self._run(op)

    async def reset(self, key: SessionKey, mint: Minter) -> SessionEntry:
        def op() -> SessionEntry:
            with self._key_lock(key):
                self._load_locked(key)  # a damaged entry is quarantined, not overwritten
                entry = mint(key)
                self._write(self._entry_file(key), entry)
                return entry

        return await self._run(op)

    async def delete(self, key: SessionKey, session_id: str) -> bool:
        def op() -> bool:
            with self._key_lock(key):
                current = self._load_locked(key)
                if current is None or current.session_id != session_id:
                    return False
                os.unlink(self._entry_file(key))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._transcript_file(session_id))
                return True

        return await self._run(op)

    async def list(self) -> Listing:
        return await self._run(self._scan)

    def _scan(self) -> Listing:
        entries: list[SessionEntry] = []
        damaged: list[Damaged] = []
        for path in sorted(self._sessions.glob("*/*/*.json")):
            try:
                entry = self._read(path)
            except CorruptEntry as bad:
                damaged.append(Damaged(str(path), bad.reason, find_key(bad.raw)))
                continue
            except OSError as exc:  # one unreadable entry must not hide all the others
                damaged.append(Damaged(str(path), f"unreadable: {exc.strerror or exc}"))
                continue
            if entry is not None:
                entries.append(entry)
        for path in sorted(self._quarantine.glob("*")):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            damaged.append(Damaged(str(path), "quarantined", find_key(raw)))
        return Listing(entries, damaged)

    async def append(self, session_id: str, records: Sequence[ChatMessage]) -> None:
        path = self._transcript_file(session_id)

        def op() -> None:
            self._in_dir(os.path.dirname(path), lambda: jsonl.append(path, records))

        await self._run(op)

    async def tail(self, session_id: str, n: int) -> builtins.list[ChatMessage]:
        return await self._run(jsonl.tail, self._transcript_file(session_id), n)

    @contextlib.asynccontextmanager
    async def lock_turn(self, key: SessionKey) -> AsyncIterator[None]:
        path = self._lock_path(key, "turn")

        def try_acquire() -> FileLock | None:
            self._ensure_dir(os.path.dirname(path))
            lock = FileLock(path, mode=0o600, thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                return None
            return lock

        # Poll instead of blocking a worker thread: a turn can last minutes, and a
        # blocked thread per waiting key would starve the pool.
        delay = 0.001
        while True:
            attempt = asyncio.ensure_future(self._run_on(self._turn_lock_thread, try_acquire))
            try:
                lock = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                # The attempt may still win the lock in its thread. Release it here rather
                # than trust FileLock.__del__ (a lingering reference would keep it held).
                won = await attempt
                if won is not None:
                    await self._run_on(self._turn_lock_thread, won.release)
                raise
            if lock is not None:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            await asyncio.shield(self._run_on(self._turn_lock_thread, lock.release))

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._turn_lock_thread.shutdown(wait=True)


def _mkdirs(d: Path) -> None:
    """Like mkdir -p, but every folder it creates is 0700 (mkdir's parents get the umask's mode)."""
    if d.is_dir():
        return
    _mkdirs(d.parent)
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
