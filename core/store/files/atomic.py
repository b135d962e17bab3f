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
from collections.abc import Awaitable, Callable

from core.store import jsonl


def _create(tmp: str) -> int:
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def write_atomically(
    path: str, data: bytes, *, create: Callable[[str], int] = _create, sync_folder: bool = True
) -> os.stat_result:
    """Replace `path` with `data` (mode 0600); the written file's stat (a rename keeps its
    inode, mtime and size, so a caller can tell later whether `path` is still this file).
    `create` opens the temporary file (the file store passes one that makes a missing
    folder first). With `sync_folder` False the caller takes over the folder's fsync
    (`sync_folder`), before anything that depends on the rename is acknowledged."""
    tmp = _temp_for(path)
    fd = create(tmp)
    try:
        try:
            jsonl.write_all(fd, data)
            os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_folder:
        sync_folder_of(path)
    return written


async def write_atomically_on_loop(
    path: str, data: bytes, *, create: Callable[[str], int], fsync: Callable[[int], Awaitable[None]]
) -> os.stat_result:
    """`write_atomically` for the event loop, the folder's fsync left to the caller: the
    small file is made, written and renamed here (page-cache work), and only its fsync
    waits elsewhere (`fsync`, on a thread). One hand-off to a thread instead of a dozen
    calls there that each take the GIL back from the loop (docs/performance.md)."""
    tmp = _temp_for(path)
    fd = create(tmp)
    try:
        try:
            jsonl.write_all(fd, data)
            await fsync(fd)
            written = os.fstat(fd)
        finally:
            # Also when cancelled: a queued fsync is cancelled with the wait, and one under
            # way holds its own reference to the file.
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return written


def _temp_for(path: str) -> str:
    folder, name = os.path.split(path)
    return f"{folder}/.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def sync_folder_of(path: str) -> None:
    """fsync the folder holding `path`, so a rename or a new name in it survives a power loss."""
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
