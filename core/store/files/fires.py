"""The files store's scheduled fires (blocking; run on a worker thread).

Layout under the state directory (dirs 0700, files 0600):

    fires/ab/<sha256(schedule)>/.lock        flock: every operation of one schedule holds it
    fires/ab/<sha256(schedule)>/mark.json    the schedule's mark (`FireMark`)
    fires/ab/<sha256(schedule)>/<due ms>.json  one fire: {token, state, until, outcome}
    fires/saved/<sha256(name)>.json          a schedule made at runtime: {name, spec}

Each operation reads and writes under the schedule's lock, so a claim is one atomic
step across every process on the host; the lock is an OS lock that dies with its
holder. Writes are atomic (temp file, fsync, rename): after a kill -9 a fire is either
claimed or not, and a mark is the old or the new one. A fire at or before the mark is
done whether or not its file is still there, so the files of passed fires are removed
when the mark advances.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.model import FireClaim, FireMark, StoreError
from core.store.files.atomic import write_atomically
from core.store.files.layout import mkdirs

MARK = "mark.json"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _ms(due: float) -> int:
    return round(due * 1000)


def _due_ms(file_name: str) -> float:
    """The due time (ms) a fire's file is named after; infinity for any other file."""
    stem = file_name.removesuffix(".json")
    return int(stem) if stem != file_name and stem.lstrip("-").isdigit() else float("inf")


class FileFires:
    def __init__(self, root: Path | str) -> None:
        self.root = f"{root}/fires"
        self.saved = f"{self.root}/saved"
        mkdirs(Path(self.saved))

    def _folder(self, schedule: str) -> str:
        h = _digest(schedule)
        return f"{self.root}/{h[:2]}/{h}"

    @contextlib.contextmanager
    def _locked(self, schedule: str) -> Iterator[str]:
        folder = self._folder(schedule)
        if not os.path.isdir(folder):
            mkdirs(Path(folder))
        fd = os.open(f"{folder}/.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield folder
        finally:
            os.close(fd)

    @staticmethod
    def _read(path: str) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as f:
                obj = json.loads(f.read())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise StoreError(f"a stored fire record is damaged ({path}): {exc}") from None
        if not isinstance(obj, dict):
            raise StoreError(f"a stored fire record is damaged ({path})")
        return obj

    def _mark(self, folder: str) -> FireMark | None:
        raw = self._read(f"{folder}/{MARK}")
        if raw is None:
            return None
        try:
            return FireMark.from_json(raw)
        except ValueError as exc:
            raise StoreError(f"a schedule mark is damaged ({folder}): {exc}") from None

    def claim(self, schedule: str, due: float, token: str, lease_s: float) -> FireClaim:
        with self._locked(schedule) as folder:
            mark = self._mark(folder)
            if mark is not None and due <= mark.due:
                return FireClaim("done", outcome=mark.outcome if _ms(due) == _ms(mark.due) else "")
            path = f"{folder}/{_ms(due)}.json"
            now = time.time()
            fire = self._read(path)
            takeover = False
            if fire is not None:
                if fire.get("state") == "done":
                    return FireClaim("done", outcome=str(fire.get("outcome", "")))
                if fire.get("token") != token:
                    if float(fire.get("until", 0.0)) > now:
                        return FireClaim("taken")
                    takeover = True
                else:
                    takeover = bool(fire.get("takeover", False))
            record = {"token": token, "state": "claimed", "until": now + lease_s, "takeover": takeover}
            write_atomically(path, json.dumps(record).encode())
            return FireClaim("mine", takeover=takeover)

    def renew(self, schedule: str, due: float, token: str, lease_s: float) -> bool:
        with self._locked(schedule) as folder:
            path = f"{folder}/{_ms(due)}.json"
            fire = self._read(path)
            if fire is None or fire.get("token") != token or fire.get("state") != "claimed":
                return False
            fire["until"] = time.time() + lease_s
            write_atomically(path, json.dumps(fire).encode())
            return True

    def finish(self, schedule: str, due: float, token: str, outcome: str) -> None:
        with self._locked(schedule) as folder:
            mark = self._mark(folder)
            if mark is not None and due <= mark.due:
                return
            record = {"token": token, "state": "done", "until": 0.0, "outcome": outcome}
            write_atomically(f"{folder}/{_ms(due)}.json", json.dumps(record).encode())

    def mark(self, schedule: str) -> FireMark | None:
        folder = self._folder(schedule)
        if not os.path.isdir(folder):
            return None
        return self._mark(folder)

    def advance(self, schedule: str, mark: FireMark) -> FireMark:
        with self._locked(schedule) as folder:
            stored = self._mark(folder)
            if stored is not None and stored.due >= mark.due:
                return stored
            write_atomically(f"{folder}/{MARK}", json.dumps(mark.to_json()).encode())
            limit = _ms(mark.due)
            with os.scandir(folder) as listing:
                passed = [
                    e.path
                    for e in listing
                    if e.name.endswith(".json")
                    and e.name[:-5].lstrip("-").isdigit()
                    and int(e.name[:-5]) <= limit
                ]
            for path in passed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            return mark

    def save(self, name: str, spec: bytes) -> None:
        record = json.dumps({"name": name, "spec": spec.decode()}).encode()
        write_atomically(f"{self.saved}/{_digest(name)}.json", record)

    def saved_all(self) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        with os.scandir(self.saved) as listing:
            paths = [e.path for e in listing if e.name.endswith(".json") and not e.name.startswith(".")]
        for path in paths:
            obj = self._read(path)
            if obj is not None and isinstance(obj.get("name"), str) and isinstance(obj.get("spec"), str):
                found[obj["name"]] = obj["spec"].encode()
        return found

    def drop(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.saved}/{_digest(name)}.json")
