"""The file store's layout on disk (see store.py) and its entry files: paths, folders
made on demand, the atomic entry write, damaged entries quarantined and recovered.
Blocking functions: the store (which has a `FileLayout` as `store.layout`) runs them on
its threads (or, for the cheap ones, on the loop).

Layout under the state directory (dirs 0700, files 0600):

    sessions/ab/cd/<sha256(key)>.json   the entry; the key itself is stored inside
    locks/ab/<sha256(key)>.turn         held for the whole of a turn of that key, and
                                        by every write of its entry; holds the key's
                                        fencing counter
    locks/ab/<sha256(key)>.stop         one byte appended per `/stop`: its size is the stop counter
    transcripts/<id[:2]>/<id>.jsonl     memory of one session id: one line per commit
    blobs/<id[:2]>/<id>/<sha256>        attachment bytes of one session (blobs.py)
    quarantine/                         damaged entries moved aside, never overwritten
    deliveries/, limits/                delivery markers and per-sender counters
                                        (deliveries.py)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from core.model import SessionEntry, SessionKey
from core.store import jsonl
from core.store.entries import SESSION_ID, entry_from_json, entry_to_json, recover_entry, report_quarantine
from core.store.files.atomic import write_atomically, write_atomically_on_loop

log = logging.getLogger("chatlane.store")

T = TypeVar("T")

Signature = tuple[int, int, int]
"""(inode, mtime in ns, size) of an entry file: it changes whenever the file is replaced."""


def signature(st: os.stat_result) -> Signature:
    return st.st_ino, st.st_mtime_ns, st.st_size


class CorruptEntry(Exception):
    def __init__(self, path: Path, reason: str, raw: bytes) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.raw = path, reason, raw


class FileLayout:
    """Paths under the state folder and the entry files in them."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.sessions = self.root / "sessions"
        self._sessions_str = str(self.sessions)
        self.locks = self.root / "locks"
        self.transcripts = self.root / "transcripts"
        self.quarantine = self.root / "quarantine"
        self.blobs = self.root / "blobs"
        self._locks_str = str(self.locks)
        self._transcripts_str = str(self.transcripts)

    def make_folders(self) -> None:
        """The state folder and its fixed subfolders, 0700; OSError if it cannot be used."""
        for d in (self.root, self.sessions, self.locks, self.transcripts, self.quarantine):
            mkdirs(d)
        self.root.chmod(0o700)

    # ------------------------------------------------------------------ paths
    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def entry_path(self, key: str) -> Path:
        return Path(self.entry_file(key))

    def entry_file(self, key: str) -> str:
        # A plain string: pathlib joins cost more than the read itself on the hot path.
        h = self._digest(key)
        return f"{self._sessions_str}/{h[:2]}/{h[2:4]}/{h}.json"

    def lock_file(self, key: str, kind: str) -> str:
        h = self._digest(key)
        return f"{self._locks_str}/{h[:2]}/{h}.{kind}"

    def transcript_path(self, session_id: str) -> Path:
        return Path(self.transcript_file(session_id))

    def transcript_file(self, session_id: str) -> str:
        # Session ids are minted here, but an id read back from disk is checked again:
        # nothing that is not 32 hex digits ever becomes part of a path.
        if not SESSION_ID.fullmatch(session_id):
            raise ValueError(f"malformed session id {session_id[:40]!r}")
        return f"{self._transcripts_str}/{session_id[:2]}/{session_id}.jsonl"

    def ensure_dir(self, d: str) -> None:
        # One stat per call rather than a cache of folders made: a cache would grow
        # with every fan-out folder (65,536 of them) and go stale if one is removed.
        if os.path.isdir(d):
            return
        try:
            # The common case, a new fan-out folder under one that exists: one mkdir (a
            # new conversation usually makes its entry's folder).
            os.mkdir(d, 0o700)
            return
        except FileExistsError:
            return  # made meanwhile by another thread or process
        except FileNotFoundError:
            pass  # its parent is missing too: the state folder was removed while running
        if not self.root.is_dir():
            log.warning("state directory %s was missing; made it again", self.root)
        mkdirs(Path(d))
        self.root.chmod(0o700)

    def in_dir(self, d: str, fn: Callable[[], T]) -> T:
        """`fn()`, which creates a file in `d`; if `d` is missing (first use, or the state
        directory was removed while running), make it and retry once."""
        try:
            return fn()
        except FileNotFoundError:
            # Retried even if `d` exists by now: another thread may have just made it.
            self.ensure_dir(d)
            return fn()

    # ---------------------------------------------------------- entry file I/O
    def read(self, path: Path | str, key: str | None = None) -> SessionEntry | None:
        """The entry at `path` (which must belong to `key` when given) as its last commit
        left it; None if absent."""
        entry = self.read_stored(path, key)
        return None if entry is None else self.with_progress(entry)

    def read_stored(self, path: Path | str, key: str | None = None) -> SessionEntry | None:
        """The entry file at `path` as written at its mint or reset; None if absent."""
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
        belongs = entry.key == key if key is not None else self.entry_file(entry.key) == str(path)
        if not belongs:
            raise CorruptEntry(Path(path), "entry holds a key that does not belong in this file", raw)
        return entry

    def with_progress(self, entry: SessionEntry) -> SessionEntry:
        """The entry as its last commit left it (from any thread: reads the file)."""
        return advanced(entry, jsonl.last_progress(self.transcript_file(entry.session_id)))

    def write(self, path: str, entry: SessionEntry, *, sync_folder: bool = True) -> Signature:
        """Replace the entry file at `path`; the signature of the file written."""
        return signature(
            write_atomically(path, _encoded(entry), create=self._creator(path), sync_folder=sync_folder)
        )

    async def write_on_loop(
        self, path: str, entry: SessionEntry, fsync: Callable[[int], Awaitable[None]]
    ) -> Signature:
        """`write` from the event loop, but for the fsync (`fsync`: on a thread); the caller
        has the folder synced before anything that depends on the rename is acknowledged."""
        return signature(
            await write_atomically_on_loop(path, _encoded(entry), create=self._creator(path), fsync=fsync)
        )

    def _creator(self, path: str) -> Callable[[str], int]:
        """Opens a new temporary file beside `path`, making the folder when it is missing."""
        folder = os.path.dirname(path)
        return lambda tmp: self.in_dir(folder, lambda: _create_new(tmp))

    def load_locked(self, key: SessionKey) -> SessionEntry | None:
        """Read by a holder of the key's turn lock (every entry writer holds it); a damaged
        entry is quarantined and recovered."""
        try:
            return self.read(self.entry_file(key), key)
        except CorruptEntry as bad:
            return self.quarantine_and_recover(key, bad)

    def quarantine_and_recover(self, key: SessionKey, bad: CorruptEntry) -> SessionEntry | None:
        self.ensure_dir(str(self.quarantine))
        moved = self.quarantine / f"{bad.path.name}.{time.time_ns()}"
        os.replace(bad.path, moved)
        recovered = recover_entry(key, bad.raw)
        report_quarantine(bad.path.name, bad.reason, str(moved), recovered)
        if recovered is not None:
            self.write(str(bad.path), recovered)
        return recovered


def mkdirs(d: Path) -> None:
    """Like mkdir -p, but every folder it creates is 0700 (mkdir's parents get the umask's mode)."""
    if d.is_dir():
        return
    mkdirs(d.parent)
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)


def _encoded(entry: SessionEntry) -> bytes:
    return json.dumps(entry_to_json(entry), separators=(",", ":")).encode()


def _create_new(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def advanced(entry: SessionEntry, progress: jsonl.Progress | None) -> SessionEntry:
    """The entry as its last commit left it (turn count, last interaction)."""
    if progress is None:
        return entry  # no commit yet (or an older transcript format: the entry counted)
    return replace(
        entry,
        turns=progress.turns,
        last_interaction_at=progress.at,
        updated_at=max(entry.updated_at, progress.at),
    )
