"""Whole-file writes that a crash leaves old or new, never torn: the file store's entries
and attachment blobs.

The bytes go to a temporary file beside the target (fsync'd), which then replaces the
target, and the folder is fsync'd so the rename itself survives a power loss. A short
write (a full disk) fails before anything is replaced, and no temporary file is left.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable

from core.store import jsonl


def _create(tmp: str) -> int:
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def write_atomically(
    path: str, data: bytes, *, create: Callable[[str], int] = _create, sync_folder: bool = True
) -> None:
    """Replace `path` with `data` (mode 0600). `create` opens the temporary file (the
    file store passes one that makes a missing folder first). With `sync_folder` False
    the caller takes over the folder's fsync (`sync_folder`), before anything that
    depends on the rename is acknowledged."""
    folder, name = os.path.split(path)
    tmp = f"{folder}/.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = create(tmp)
    try:
        try:
            jsonl.write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_folder:
        sync_folder_of(path)


def sync_folder_of(path: str) -> None:
    """fsync the folder holding `path`, so a rename or a new name in it survives a power loss."""
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
