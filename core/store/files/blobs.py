"""The files backend's attachment bytes: content-addressed, one folder per session.

    blobs/<id[:2]>/<id>/<sha256>

Blocking functions; the file store runs them off the event loop. A blob is written
like an entry (temp file, fsync, os.replace, fsync of the folder; files 0600, folders
0700), so a crash leaves the whole blob or none. Blobs are kept per session, not shared
between sessions, so forgetting a session removes exactly its files. Names are checked
(a session id is 32 hex digits, a digest 64): nothing else becomes part of a path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from core.store.entries import SESSION_ID
from core.store.files.atomic import sync_folder_of, write_atomically

DIGEST = re.compile(r"[0-9a-f]{64}")


def folder(root: Path, session_id: str) -> Path:
    if not SESSION_ID.fullmatch(session_id):
        raise ValueError(f"malformed session id {session_id[:40]!r}")
    return root / session_id[:2] / session_id


def put(root: Path, session_id: str, blobs: Mapping[str, bytes], mkdirs: Callable[[Path], None]) -> None:
    """Store each blob under its digest; one already there is left alone (same bytes)."""
    d = folder(root, session_id)
    for digest, data in blobs.items():
        if not DIGEST.fullmatch(digest) or hashlib.sha256(data).hexdigest() != digest:
            raise ValueError("a blob must be stored under the sha256 of its bytes")
        path = d / digest
        if path.exists():
            continue
        mkdirs(d)
        write_atomically(str(path), data)


_COPY_CHUNK = 1 << 20


def put_file(root: Path, session_id: str, digest: str, src: Path, mkdirs: Callable[[Path], None]) -> None:
    """Store the bytes of file `src` under `digest`, copied 1 MiB at a time (memory stays
    bounded however large), hashed on the way and refused (ValueError) if they do not
    match; written aside, fsynced and renamed into place like `put`."""
    if not DIGEST.fullmatch(digest):
        raise ValueError("a blob must be stored under the sha256 of its bytes")
    d = folder(root, session_id)
    path = d / digest
    if path.exists():
        return
    mkdirs(d)
    tmp = d / f".{digest}.{uuid.uuid4().hex[:8]}.tmp"
    h = hashlib.sha256()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(src, "rb") as f:
                while chunk := f.read(_COPY_CHUNK):
                    h.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if h.hexdigest() != digest:
            raise ValueError("a blob must be stored under the sha256 of its bytes")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    sync_folder_of(str(path))


def get(root: Path, session_id: str, digests: Sequence[str]) -> dict[str, bytes]:
    d = folder(root, session_id)
    found: dict[str, bytes] = {}
    for digest in digests:
        if not DIGEST.fullmatch(digest) or digest in found:
            continue
        try:
            data = (d / digest).read_bytes()
        except FileNotFoundError:
            continue
        if hashlib.sha256(data).hexdigest() == digest:  # a damaged blob is not shown as the file
            found[digest] = data
    return found


def prune(root: Path, session_id: str) -> None:
    """Remove every blob of the session (nothing to do when it has none)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder(root, session_id))
