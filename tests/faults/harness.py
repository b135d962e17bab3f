"""Helpers of the fault suite: checks that read the state directory the way a restart
would, and real filesystem faults (mounts, a full disk).

The processes, the in-process API and the test agents it attacks with are shared
support: `bots.testing` (ChatlaneProcess, FlakyAgent, ...) and `tests/support/`."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bots.testing import eventually
from core.model.keys import validate_key
from core.model.messages import ChatMessage
from core.store import jsonl
from tests.support.skips import cannot_run_here

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------ state checks
@dataclass(slots=True)
class StateReport:
    """What a restart would find in a state directory."""

    entries: dict[str, str]
    """key -> session id of every entry that parses."""
    damaged: list[str]
    transcripts: dict[str, list[ChatMessage]]
    """session id -> every readable record."""
    bad_lines: int
    stray: list[Path]
    """Files that are neither entries, transcripts, locks nor temp files."""


_ENTRY_FIELDS = {
    "key": str,
    "sessionId": str,
    "platform": str,
    "createdAt": float,
    "sessionStartedAt": float,
    "lastInteractionAt": float,
    "updatedAt": float,
    "turns": int,
}


def _entry(obj: Any) -> tuple[str, str]:
    """(key, session id) of a well-formed entry; ValueError otherwise. Written here, not
    imported, so the check does not trust the code under test."""
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    for name, kind in _ENTRY_FIELDS.items():
        value = obj.get(name)
        ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
        if not ok or isinstance(value, bool):
            raise ValueError(f"field {name!r} missing or of the wrong type")
    if not re.fullmatch(r"[0-9a-f]{32}", obj["sessionId"]):
        raise ValueError("malformed sessionId")
    return validate_key(obj["key"]), obj["sessionId"]


def inspect_state(root: Path) -> StateReport:
    """Read every entry and transcript directly from disk (no store, no quarantine)."""
    entries: dict[str, str] = {}
    damaged: list[str] = []
    for path in sorted((root / "sessions").glob("*/*/*.json")):
        try:
            key, session_id = _entry(json.loads(path.read_bytes()))
        except (ValueError, UnicodeDecodeError) as exc:
            damaged.append(f"{path.name}: {exc}")
            continue
        entries[key] = session_id
    transcripts: dict[str, list[ChatMessage]] = {}
    bad = 0
    for path in sorted((root / "transcripts").glob("*/*.jsonl")):
        records, skipped = jsonl.read_all(path)
        transcripts[path.stem] = records
        bad += skipped
    stray = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and not (p.suffix in (".json", ".jsonl", ".lock", ".turn", ".tmp") or p.parent.name == "quarantine")
        and p.relative_to(root).parts[0] not in ("deliveries", "limits")  # core/store/files/deliveries.py
    ]
    return StateReport(entries, damaged, transcripts, bad, stray)


# ------------------------------------------------------------ real filesystem faults
@contextlib.contextmanager
def mounted(target: Path, *options: str) -> Iterator[bool]:
    """`mount <options> <target>` for the block; yields False when this host forbids it."""
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(target)], capture_output=True, check=False)
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


@contextlib.contextmanager
def mounted_or_skipped(target: Path, *options: str) -> Iterator[None]:
    """`mount <options> <target>` for the block; skipped (failed in CI) with mount's own
    error when this host forbids it (it needs root or CAP_SYS_ADMIN, no seccomp veto)."""
    target.mkdir(parents=True, exist_ok=True)
    command = ["mount", *options, str(target)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit {done.returncode}"
        cannot_run_here(f"`{' '.join(command[:-1])} DIR` failed on this host: {why}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


async def remount(target: Path, mode: str) -> None:
    """Make a bind mount read-only (`ro`) or writable (`rw`) again.

    Going read-only fails with EBUSY while any file on it is open for writing; a turn
    lock is released just after its reply is sent, so retry for a moment (on the event
    loop's time: the release runs on it).
    """
    tried: list[subprocess.CompletedProcess[str]] = []

    def attempt() -> bool:
        done = subprocess.run(
            ["mount", "-o", f"remount,bind,{mode}", str(target)], capture_output=True, text=True, check=False
        )
        tried.append(done)
        return done.returncode == 0

    try:
        await eventually(attempt, timeout=2.0, interval=0.02)
    except TimeoutError:
        raise AssertionError(f"cannot remount {target} {mode}: {tried[-1].stderr}") from None


def fill_disk(where: Path) -> Path:
    """Write a file in `where` until the filesystem says ENOSPC; delete it to free the space."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler
