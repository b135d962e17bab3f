"""The files store's approvals and tool outcomes: one small JSON file each.

    <root>/approvals/<sha256(id)>.json             an approval (pending or decided)
    <root>/tools/<sha256(turn)>/<sha256(call)>.json  what one tool call of a turn came to

Writes are atomic (temp file, fsync, rename, folder fsync). A decision is a
compare-and-set under an OS lock on the approval's `.lock` file (it dies with its
process, so a killed decider never blocks the others): the first decision stands, and
the same decision by the same person again is its own retry. These calls are rare (one
per tool call), so each leaves the event loop for the store's thread pool.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from core.model import Approval, Decision
from core.store.files.atomic import write_atomically
from core.store.files.layout import mkdirs


def _name(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FileApprovals:
    """See the module doc; every method blocks (the store runs it in its pool)."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "approvals"
        self.tools = root / "tools"
        for d in (self.folder, self.tools):
            mkdirs(d)

    def _path(self, approval_id: str) -> Path:
        return self.folder / f"{_name(approval_id)}.json"

    def open_approval(self, approval: Approval) -> None:
        path = self._path(approval.approval_id)
        if path.exists():
            return  # a retry of its own write
        write_atomically(str(path), json.dumps(approval.to_json()).encode())

    def get_approval(self, approval_id: str) -> Approval | None:
        try:
            data = self._path(approval_id).read_bytes()
        except FileNotFoundError:
            return None
        return Approval.from_json(json.loads(data))

    def decide_approval(self, approval_id: str, decision: Decision, by: str) -> Approval | None:
        path = self._path(approval_id)
        if not path.exists():
            return None
        fd = os.open(str(path.with_suffix(".lock")), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = self.get_approval(approval_id)
            if current is None or current.decision is not None:
                return current  # the first decision stands
            obj = current.to_json()
            obj["decision"], obj["by"] = decision, by
            write_atomically(str(path), json.dumps(obj).encode())
            return Approval.from_json(obj)
        finally:
            os.close(fd)  # lets go of the lock

    def put_tool_outcome(self, turn_id: str, call_key: str, outcome: Mapping[str, object]) -> None:
        folder = self.tools / _name(turn_id)
        mkdirs(folder)
        write_atomically(str(folder / f"{_name(call_key)}.json"), json.dumps(dict(outcome)).encode())

    def get_tool_outcome(self, turn_id: str, call_key: str) -> dict[str, object] | None:
        try:
            data = (self.tools / _name(turn_id) / f"{_name(call_key)}.json").read_bytes()
        except FileNotFoundError:
            return None
        obj = json.loads(data)
        return obj if isinstance(obj, dict) else None


class AsyncFileApprovals:
    """`FileApprovals` off the event loop, through the store's own runner."""

    def __init__(self, inner: FileApprovals, run: Callable[..., Awaitable[Any]]) -> None:
        self.inner = inner
        self._run = run  # FileStore._run: maps OSError to StoreError

    async def open_approval(self, approval: Approval) -> None:
        await self._run(self.inner.open_approval, approval)

    async def get_approval(self, approval_id: str) -> Approval | None:
        result: Approval | None = await self._run(self.inner.get_approval, approval_id)
        return result

    async def decide_approval(self, approval_id: str, decision: Decision, by: str) -> Approval | None:
        result: Approval | None = await self._run(self.inner.decide_approval, approval_id, decision, by)
        return result

    async def put_tool_outcome(self, turn_id: str, call_key: str, outcome: Mapping[str, object]) -> None:
        await self._run(self.inner.put_tool_outcome, turn_id, call_key, dict(outcome))

    async def get_tool_outcome(self, turn_id: str, call_key: str) -> dict[str, object] | None:
        result: dict[str, object] | None = await self._run(self.inner.get_tool_outcome, turn_id, call_key)
        return result
