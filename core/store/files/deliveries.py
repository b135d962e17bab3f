"""The files store's delivery memory and per-sender counters (blocking; run on a worker
thread, or on the event loop through `without_waiting` when no lock is held elsewhere).

Layout under the state directory (dirs 0700, files 0600):

    deliveries/ab/<sha256(name)>     one marker per delivery or request id seen
    deliveries/ab/.lock              held only to replace or remove an expired marker
    deliveries/journal/<start ms>.log  names of the markers created in one window
    limits/ab/<sha256(sender)>.json  a sender's minute and day windows, under flock

A marker is made with an exclusive create (`O_CREAT | O_EXCL`, or `link` for one with
content): exactly one process on the host succeeds, which makes "is this delivery new?"
one atomic step. A marker is fresh for `window_s` after its mtime. An expired marker
is replaced or removed only under its folder's lock and after re-reading its mtime, and
nothing else ever removes a marker, so a fresh marker is never lost.

Sweeping stays O(1) per check: every new marker's name is appended to the journal of
its window; a journal two windows old names only expired markers, and one process
claims it (an atomic rename) and removes a few of its markers on each of its next checks.
Markers are not fsynced: a power loss can forget the last deliveries (a process crash
cannot).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from core.model import Admission, RequestClaim, StoreError

SWEEP_PER_CHECK = 4
"""Expired markers removed per new marker: more than one, so sweeping outpaces creating."""
LOOK_EVERY_S = 1.0
"""How often a process looks for a journal to sweep (a directory listing)."""

_Fresh = Literal["fresh", "expired", "missing"]

T = TypeVar("T")


class WouldWait(Exception):
    """Raised under `without_waiting` where a lock is held elsewhere: nothing was changed
    yet, so the call is made again on a thread, where it waits."""


_NOT_WAITING = contextvars.ContextVar("chatlane_deliveries_not_waiting", default=False)


def without_waiting(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` taking every lock without waiting: `WouldWait` instead, raised before
    `fn` changed anything. For the request claims, which the event loop runs itself when
    it can: a dozen small page-cache calls on a thread take the GIL back from the loop a
    dozen times (docs/performance.md). Only for calls whose every lock comes before their
    first change (`mark_delivered` does not qualify: it creates markers one by one)."""
    token = _NOT_WAITING.set(True)
    try:
        return fn(*args)
    finally:
        _NOT_WAITING.reset(token)


def _mkdirs(d: str) -> None:
    """mkdir -p where every folder made is 0700 (makedirs gives parents the umask's mode)."""
    if os.path.isdir(d):
        return
    _mkdirs(os.path.dirname(d))
    with contextlib.suppress(FileExistsError):
        os.mkdir(d, 0o700)


@contextlib.contextmanager
def _flocked(path: str) -> Iterator[int]:
    """An exclusive flock on `path` (created if missing), released on exit; the fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if _NOT_WAITING.get():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WouldWait(path) from None
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing the description releases the lock


class Markers:
    """Exclusive-create markers with an expiry; safe for many processes on one host."""

    def __init__(self, root: Path | str) -> None:
        self.root = str(root)
        self.journal = f"{self.root}/journal"
        _mkdirs(self.journal)
        self._sweep: tuple[str, IO[bytes]] | None = None
        self._next_look = 0.0

    # ------------------------------------------------------------ one marker
    def path(self, name: str) -> str:
        h = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.root}/{h[:2]}/{h}"

    def create(self, name: str, window_s: float, content: bytes = b"") -> bool:
        """Make the marker of `name`; True if this call made it (absent or expired before)."""
        path = self.path(name)
        if self._create(path, content):
            self._journal(path, window_s)
            return True
        if self._freshness(path, window_s) == "fresh":
            return False
        with _flocked(os.path.dirname(path) + "/.lock"):
            state = self._freshness(path, window_s)
            if state == "fresh":
                return False
            if state == "expired":
                os.unlink(path)  # only lock holders remove markers: it is the expired one
            made = self._create(path, content)
        if made:
            self._journal(path, window_s)
        return made

    def read(self, name: str, window_s: float) -> bytes | None:
        """The content of a fresh marker; None when it is missing or expired."""
        path = self.path(name)
        try:
            with open(path, "rb") as f:
                if time.time() - os.fstat(f.fileno()).st_mtime >= window_s:
                    return None
                return f.read()
        except FileNotFoundError:
            return None

    def replace(self, name: str, content: bytes) -> None:
        """Give an existing marker new content (atomically; its window starts again)."""
        path = self.path(name)
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        self._write_new(tmp, content)
        os.replace(tmp, path)

    def remove(self, name: str) -> None:
        with self.locked(name), contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))

    def locked(self, name: str) -> contextlib.AbstractContextManager[int]:
        """The lock of `name`'s folder: held to compare a marker's content and replace it.
        Never call `create` or `remove` while holding it (they take it themselves)."""
        folder = os.path.dirname(self.path(name))
        _mkdirs(folder)
        return _flocked(folder + "/.lock")

    def _create(self, path: str, content: bytes) -> bool:
        folder = os.path.dirname(path)
        try:
            if not content:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                except FileNotFoundError:
                    _mkdirs(folder)
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                return True
            # A marker with content appears whole: written aside, then linked (EEXIST if taken).
            _mkdirs(folder)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            self._write_new(tmp, content)
            try:
                os.link(tmp, path)
            finally:
                os.unlink(tmp)
            return True
        except FileExistsError:
            return False

    @staticmethod
    def _write_new(path: str, content: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    @staticmethod
    def _freshness(path: str, window_s: float) -> _Fresh:
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return "missing"
        return "fresh" if time.time() - mtime < window_s else "expired"

    # ------------------------------------------------------------ sweeping
    def _journal(self, path: str, window_s: float) -> None:
        now = time.time()
        start = int(now // window_s * window_s * 1000)  # ms: windows may be short (tests)
        line = (os.path.relpath(path, self.root) + "\n").encode()
        fd = os.open(f"{self.journal}/{start}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one small O_APPEND write: never interleaved with another
        finally:
            os.close(fd)
        self.sweep_some(window_s, now)

    def sweep_some(self, window_s: float, now: float, budget: int = SWEEP_PER_CHECK) -> int:
        """Remove up to `budget` expired markers named by a claimed old journal; how many."""
        removed = 0
        while budget > 0:
            sweep = self._sweep or self._claim(window_s, now)
            if sweep is None:
                return removed
            claimed, f = sweep
            at = f.tell()
            line = f.readline()
            if not line:
                f.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(claimed)
                self._sweep = None
                continue
            budget -= 1
            relative = line.decode(errors="replace").strip()
            if "/" not in relative or ".." in relative:
                continue
            path = f"{self.root}/{relative}"
            try:
                with _flocked(os.path.dirname(path) + "/.lock"):
                    if self._freshness(path, window_s) == "expired":
                        os.unlink(path)
                        removed += 1
            except WouldWait:
                # Sweeping runs after its caller's change, so it never makes that caller
                # run again: this marker waits for the next check (its line is read again).
                f.seek(at)
                return removed
        return removed

    def _claim(self, window_s: float, now: float) -> tuple[str, IO[bytes]] | None:
        if now < self._next_look:
            return None
        self._next_look = now + min(LOOK_EVERY_S, window_s)
        with os.scandir(self.journal) as listing:
            entries = list(listing)
        for entry in entries:
            name = entry.name
            if name.endswith(".log"):
                try:
                    old = int(name.removesuffix(".log")) / 1000 + 2 * window_s <= now
                except ValueError:
                    continue
            else:  # a claim whose sweeper died (or is slow): take it over after a window
                old = name.endswith(".sweep") and now - entry.stat().st_mtime >= window_s
            if not old:
                continue
            claimed = f"{self.journal}/{name.split('.')[0]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.sweep"
            try:
                os.rename(entry.path, claimed)
            except FileNotFoundError:
                continue  # another process claimed it first
            os.utime(claimed)
            self._sweep = (claimed, open(claimed, "rb"))  # noqa: SIM115 - kept across checks
            return self._sweep
        return None

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep[1].close()
            self._sweep = None


def _claim_json(fingerprint: str, owner: str, lease_until: float) -> bytes:
    return json.dumps({"fp": fingerprint, "owner": owner, "lease": lease_until}).encode()


def _lease_end(raw: bytes) -> float:
    """When a stored claim's lease lapses (wall clock; 0 for a claim without one)."""
    try:
        return float(json.loads(raw).get("lease", 0.0))
    except (ValueError, TypeError, AttributeError):
        return 0.0


def parse_claim(raw: bytes) -> RequestClaim:
    """A stored request claim (`{"fp", "owner"?, "answer"?}`) as someone else's claim;
    `StoreError` if damaged."""
    try:
        stored = json.loads(raw)
        answer = stored.get("answer")
        return RequestClaim(
            False,
            str(stored["fp"]),
            answer.encode() if answer is not None else None,
            str(stored.get("owner", "")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"a stored request claim is damaged: {exc}") from None


class FileDeliveries:
    """`mark_delivered`, the request claims and `count_message` of the files store."""

    def __init__(self, root: Path | str) -> None:
        self.markers = Markers(f"{root}/deliveries")
        self.limits = f"{root}/limits"
        _mkdirs(self.limits)

    def mark_delivered(self, ids: list[str], window_s: float) -> int:
        # Stop at the first id seen: a copy that lost the event id must not take the
        # message id from the copy that won it (then neither would answer).
        for i, delivery in enumerate(ids, 1):
            if not self.markers.create(f"d:{delivery}", window_s):
                return i
        return 0

    def claim_request(
        self, request_id: str, fingerprint: str, owner: str, lease_s: float, window_s: float
    ) -> RequestClaim:
        """Own the request if nobody does, if `owner` already does, or if its owner's
        lease lapsed before it answered (the same request only): see `Deliveries`."""
        name = f"r:{request_id}"
        mine = _claim_json(fingerprint, owner, time.time() + lease_s)
        ours = RequestClaim(True, fingerprint, None, owner)
        while True:
            if self.markers.create(name, window_s, mine):
                return ours
            with self.markers.locked(name):  # compare, then replace: one claimer at a time
                raw = self.markers.read(name, window_s)
                if raw is not None:
                    theirs = parse_claim(raw)
                    lapsed = _lease_end(raw) <= time.time() and theirs.fingerprint == fingerprint
                    if theirs.answer is None and (theirs.owner == owner or lapsed):
                        self.markers.replace(name, mine)
                        return ours
                    return theirs
            # expired or released meanwhile: try to own it (create takes the lock itself)

    def renew_request(self, request_id: str, owner: str, lease_s: float) -> bool:
        name = f"r:{request_id}"
        with self.markers.locked(name):
            raw = self.markers.read(name, float("inf"))
            if raw is None:
                return False
            theirs = parse_claim(raw)
            if theirs.owner != owner or theirs.answer is not None:
                return False
            self.markers.replace(name, _claim_json(theirs.fingerprint, owner, time.time() + lease_s))
            return True

    def finish_request(self, request_id: str, owner: str, fingerprint: str, answer: bytes) -> None:
        name = f"r:{request_id}"
        content = json.dumps({"fp": fingerprint, "owner": owner, "answer": answer.decode()}).encode()
        with self.markers.locked(name):
            raw = self.markers.read(name, float("inf"))
            if raw is not None:
                theirs = parse_claim(raw)
                if theirs.answer is not None and theirs.owner != owner:
                    return  # a successor (after this owner's lease lapsed) answered first
            self.markers.replace(name, content)

    def release_request(self, request_id: str, owner: str) -> None:
        name = f"r:{request_id}"
        with self.markers.locked(name):
            raw = self.markers.read(name, float("inf"))
            if raw is None:
                return
            theirs = parse_claim(raw)
            if theirs.owner != owner or theirs.answer is not None:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.markers.path(name))  # under the lock, like `remove`

    def count_message(self, sender: str, per_minute: int, per_day: int) -> Admission:
        h = hashlib.sha256(sender.encode("utf-8", "surrogatepass")).hexdigest()
        folder = f"{self.limits}/{h[:2]}"
        path = f"{folder}/{h}.json"
        if not os.path.isdir(folder):
            _mkdirs(folder)
        with _flocked(path) as fd:
            raw = b""
            while chunk := os.pread(fd, 4096, len(raw)):
                raw += chunk
            try:
                state = json.loads(raw) if raw else {}
            except ValueError:
                state = {}  # a torn write of a soft counter: start its windows again
            verdict, state = count_in_windows(state, time.time(), per_minute, per_day)
            data = json.dumps(state).encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        return verdict

    def close(self) -> None:
        self.markers.close()


MINUTE_S = 60.0
DAY_S = 86_400.0


def count_in_windows(
    state: dict[str, Any], now: float, per_minute: int, per_day: int
) -> tuple[Admission, dict[str, Any]]:
    """The verdict on one more message and the sender's new state (pure; the files store
    runs it under the sender's lock). State: `{"m"|"d": [window start, count, told]}`."""
    windows = [
        (name, span, limit)
        for name, span, limit in (("m", MINUTE_S, per_minute), ("d", DAY_S, per_day))
        if limit > 0
    ]
    new: dict[str, Any] = {}
    for name, span, _ in windows:
        start, count, told = _window(state.get(name))
        new[name] = [start, count, told] if now - start < span else [now, 0, False]
    for name, _, limit in windows:
        if new[name][1] >= limit:
            if new[name][2]:
                return "limited", new
            new[name][2] = True
            return "limited_first", new
    for name, _, _ in windows:
        new[name][1] += 1
    return "allowed", new


def _window(raw: Any) -> tuple[float, int, bool]:
    try:
        start, count, told = raw
        return float(start), int(count), bool(told)
    except (TypeError, ValueError):
        return 0.0, 0, False
