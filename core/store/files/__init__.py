"""The embedded backend: one small JSON file per session key, transcripts as JSON lines,
group-committed appends, `filelock` across processes. No server needed."""

from __future__ import annotations

from core.store.files.store import FileStore

__all__ = ["FileStore"]
