"""A page of the files store's entries: the fan-out folders walked in name order from a
cursor (the last file's relative path), reading only the entries the page needs.

Cost: listing the fan-out folders up to the cursor (names only: no entry is opened
before it) plus reading the page's entries and those a filter skips, at most `budget`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from core.model import Page, SessionEntry
from core.store.files.layout import CorruptEntry


def scan_page(
    sessions: Path,
    read: Callable[[str], SessionEntry | None],
    after: str,
    limit: int,
    keep: Callable[[SessionEntry], bool] | None,
    budget: int,
) -> Page:
    """See `Sessions.list_page`; `read` reads one entry file (raising `CorruptEntry`)."""
    parts = after.split("/") if after else []
    first = parts[0] if parts else ""
    second = parts[1] if len(parts) > 1 else ""
    found: list[SessionEntry] = []
    scanned = 0
    for d1 in _names(str(sessions)):
        if d1 < first:
            continue
        top = os.path.join(sessions, d1)
        for d2 in _names(top):
            if (d1, d2) < (first, second):
                continue
            folder = os.path.join(top, d2)
            for name in _names(folder):
                rel = f"{d1}/{d2}/{name}"
                if not name.endswith(".json") or rel <= after:
                    continue
                scanned += 1
                try:
                    entry = read(os.path.join(folder, name))
                except (CorruptEntry, OSError):
                    entry = None  # `list` reports it; a page just leaves it out
                if entry is not None and (keep is None or keep(entry)):
                    found.append(entry)
                if len(found) >= limit or scanned >= budget:
                    return Page(found, rel, scanned)
    return Page(found, "", scanned)


def _names(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
