"""The Redis store's sessions part (`RedisSessions`, the `Sessions` protocol) and the
names of everything the store keeps (`RedisNames`): entry reads (one script, or what
the turn lock read), the WATCH/MULTI loop that mints, resets and changes entries, and
listing by SCAN.

Atomicity. `reserve`, `set_model`, `reset` and `delete` are one WATCH/MULTI loop: WATCH
the entry, read it, decide in Python, then MULTI/SET/EXEC, which Redis refuses if anyone
wrote the entry after the WATCH; the loop then re-reads and decides again. Freshness
(`is_fresh`) and minting (`mint`) stay Python callables, exactly as in the file store.

A lost EXEC reply: redis-py then raises `WatchError` (the watch died with the
connection), as if another writer had won, though this EXEC may have been applied. So
every MULTI also sets `<prefix>:attempt:<token>` (kept a minute); after a `WatchError`
the loop asks for it and, when it is there, returns what that attempt decided instead
of deciding again (a reserve that minted must say so; a reset must not mint twice; a
delete that removed the entry must not report it missing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError, WatchError

from core.model import Damaged, FreshCheck, Listing, Minter, Page, SessionEntry, SessionKey, StoreError
from core.store import jsonl
from core.store.entries import (
    SESSION_ID,
    entry_from_json,
    entry_to_json,
    find_key,
    recover_entry,
    report_quarantine,
)
from core.store.redis.lock import TurnReads, redis_errors

log = logging.getLogger("chatlane.store")

R = TypeVar("R")
Decide = Callable[[SessionEntry | None], tuple[SessionEntry | None, R]]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_COMMIT_ID = re.compile(r"[0-9a-f]{32}")
_MAX_ATTEMPTS = 100
_ATTEMPT_MS = 60_000
"""How long a MULTI's marker is kept: far past redis-py's retries (about 2.5 s)."""
_SCAN_COUNT = 500
_SESSION_IN_RAW = re.compile(rb'"sessionId"\s*:\s*"([0-9a-f]{32})"')

# KEYS[1] entry; ARGV[1] transcript name prefix. The entry and its last commit.
GET_SCRIPT = """
local raw = redis.call('get', KEYS[1])
if not raw then return {false, false} end
local ok, obj = pcall(cjson.decode, raw)
if ok and type(obj) == 'table' and type(obj.sessionId) == 'string'
    and string.match(obj.sessionId, '^[0-9a-f]+$') and #obj.sessionId == 32 then
  return {raw, redis.call('lindex', ARGV[1] .. obj.sessionId, -1)}
end
return {raw, false}
"""


# KEYS[1] entry; ARGV[1] a minted entry (JSON). 1 if it is stored now: set here, or by
# this same call's first attempt whose reply was lost (the value holds a fresh random
# session id, so an equal value is this call's own); 0 if the key has another value.
_MINT = """
if redis.call('set', KEYS[1], ARGV[1], 'NX') then return 1 end
if redis.pcall('get', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""
_ALL = 2**31
"""`asked` of an empty transcript read: any tail of it is empty."""


def session_in(raw: bytes) -> str | None:
    """The session id an entry's JSON names, found without decoding it (None if none)."""
    found = _SESSION_IN_RAW.search(raw)
    return found.group(1).decode() if found is not None else None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class RedisNames:
    """Every Redis name the store uses, under one prefix (several bots may share a Redis);
    no unvalidated input ever becomes part of a name (ValueError instead)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.transcripts = f"{prefix}:transcript:"
        """The prefix of every transcript's name (scripts append a session id to it)."""

    def entry(self, key: str) -> str:
        return f"{self.prefix}:entry:{digest(key)}"

    def lock(self, key: str) -> str:
        return f"{self.prefix}:turn:{digest(key)}"

    def fence(self, key: str) -> str:
        return f"{self.prefix}:fence:{digest(key)}"

    def stop(self, key: str) -> str:
        return f"{self.prefix}:stop:{digest(key)}"

    def quarantine(self, key: str) -> str:
        """A fresh name for a damaged entry of `key` moved aside."""
        return f"{self.prefix}:quarantine:{digest(key)}:{time.time_ns()}"

    def attempt(self) -> str:
        """A fresh name for one MULTI's own marker (see the module doc)."""
        return f"{self.prefix}:attempt:{uuid.uuid4().hex}"

    def commit(self, commit_id: str) -> str:
        if not _COMMIT_ID.fullmatch(commit_id):
            raise ValueError(f"malformed commit id {commit_id[:40]!r}")
        return f"{self.prefix}:commit:{commit_id}"

    def transcript(self, session_id: str) -> str:
        if not SESSION_ID.fullmatch(session_id):
            raise ValueError(f"malformed session id {session_id[:40]!r}")
        return f"{self.transcripts}{session_id}"


class RedisSessions:
    """`Sessions` on Redis: one entry per key, minted and reset atomically across hosts.

    It also keeps what a turn lock's script read (`keep_reads`), while this process holds
    that lock: the turn's `get` and its `tail` (`read_with_lock`) then cost no round trip.
    """

    def __init__(self, client: aioredis.Redis, *, url: str, names: RedisNames) -> None:
        self._r = client
        self.url = url
        self.names = names
        self._get_script = client.register_script(GET_SCRIPT)
        self._mint_script = client.register_script(_MINT)
        self._reads: dict[str, TurnReads] = {}
        """Key -> what its turn lock's script read, while this process holds that lock."""
        self._tails_read: dict[str, TurnReads] = {}
        """Session id -> the same reads, for `tail` (valid while the lock is held)."""

    def keep_reads(self, key: SessionKey, found: TurnReads) -> None:
        """Remember what the turn lock of `key` read; valid until `forget_reads(key)`."""
        self._reads[key] = found

    def read_with_lock(self, session_id: str) -> TurnReads | None:
        """What the held turn lock read of `session_id`'s transcript, once `get` used it."""
        return self._tails_read.get(session_id)

    def _attempt_name(self) -> str:
        """A MULTI's own marker: set in its transaction, asked for after a `WatchError`."""
        return self.names.attempt()

    async def _applied(self, attempt: str | None) -> bool:
        """Whether the MULTI that set `attempt` was applied (its reply may have been lost)."""
        return attempt is not None and bool(await self._r.exists(attempt))

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return redis_errors(self.url, what)

    def _parse(self, key: SessionKey, raw: bytes) -> SessionEntry:
        """ValueError with the reason when `raw` is not a valid entry of `key`."""
        try:
            entry = entry_from_json(json.loads(raw))
        except UnicodeDecodeError:
            raise ValueError("entry is not UTF-8") from None
        if entry.key != key:
            raise ValueError("entry holds a key that does not belong here")
        return entry

    @staticmethod
    def _with_progress(entry: SessionEntry, last: bytes | None) -> SessionEntry:
        """The entry as its last commit (`last`, a transcript element) left it."""
        if not last:
            return entry
        try:
            _records, progress = jsonl.decode_line(last)
        except (ValueError, UnicodeDecodeError):
            return entry
        if progress is None:
            return entry  # an older transcript format: the entry counted its turns
        return replace(
            entry,
            turns=progress.turns,
            last_interaction_at=progress.at,
            updated_at=max(entry.updated_at, progress.at),
        )

    async def get(self, key: SessionKey) -> SessionEntry | None:
        if (found := self._reads.get(key)) is not None:
            return self._entry_read_with_lock(key, found)
        with self._errors("get"):
            try:
                raw, last = await self._get_script(
                    keys=[self.names.entry(key)], args=[self.names.transcripts]
                )
            except ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                return None  # damaged: quarantined by the next write of this key
        if raw is None:
            return None
        try:
            return self._with_progress(self._parse(key, raw), last)
        except ValueError:
            # Reported and quarantined by the next write of this key, which re-reads
            # first: a concurrent rewrite may already have mended it.
            return None

    def _entry_read_with_lock(self, key: SessionKey, found: TurnReads) -> SessionEntry | None:
        if found.entry is None:
            return None
        try:
            entry = self._parse(key, found.entry)
        except ValueError:
            return None  # quarantined by the next write of this key, as in `get`
        self._tails_read[entry.session_id] = found
        return self._with_progress(entry, found.commits[-1] if found.commits else None)

    async def reserve(self, key: SessionKey, is_fresh: FreshCheck, mint: Minter) -> tuple[SessionEntry, bool]:
        found = self._reads.get(key)
        if found is not None and found.entry is None:
            minted = await self._mint_with_lock(key, mint)
            if minted is not None:
                return minted, True

        def decide(current: SessionEntry | None) -> tuple[SessionEntry | None, tuple[SessionEntry, bool]]:
            if current is not None and is_fresh(current):
                return None, (current, False)
            entry = mint(key)
            return entry, (entry, True)

        return await self._update(key, decide, "reserve")

    async def _mint_with_lock(self, key: SessionKey, mint: Minter) -> SessionEntry | None:
        """The first session of a key whose turn lock (held here) found no entry: one
        `SET NX` script instead of the WATCH/MULTI loop's three round trips. The new,
        empty session is what the lock has read from then on (its `get` and `tail` cost
        no round trip). None if the key has a value after all (a damaged one, or one
        written by a writer that does not take the turn lock): the loop decides then."""
        entry = mint(key)
        raw = json.dumps(entry_to_json(entry), separators=(",", ":")).encode()
        with self._errors("reserve"):
            try:
                stored = await self._mint_script(keys=[self.names.entry(key)], args=[raw])
            except ResponseError:
                return None
        if not stored:
            return None
        self.forget_reads(key)
        self._reads[key] = self._tails_read[entry.session_id] = TurnReads(raw, [], _ALL)
        return entry

    async def set_model(self, key: SessionKey, session_id: str, model: str | None) -> SessionEntry | None:
        def decide(current: SessionEntry | None) -> tuple[SessionEntry | None, SessionEntry | None]:
            if current is None or current.session_id != session_id:
                return None, None
            updated = replace(current, model=model, updated_at=time.time())
            return updated, updated

        return await self._update(key, decide, "model choice")

    async def reset(self, key: SessionKey, mint: Minter) -> SessionEntry:
        def decide(current: SessionEntry | None) -> tuple[SessionEntry | None, SessionEntry]:
            entry = mint(key)
            return entry, entry

        return await self._update(key, decide, "reset")

    async def delete(self, key: SessionKey, session_id: str) -> bool:
        name = self.names.entry(key)
        with self._errors("delete"):
            for _ in range(_MAX_ATTEMPTS):
                attempt: str | None = None
                async with self._r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(name)
                        raw = await pipe.get(name)
                        try:
                            current = self._parse(key, raw) if raw is not None else None
                        except ValueError:
                            current = None  # damaged: left for the next write to quarantine
                        if current is None or current.session_id != session_id:
                            return False
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.delete(name, self.names.transcript(session_id))
                        attempt = self._attempt_name()
                        pipe.set(attempt, b"1", px=_ATTEMPT_MS)
                        await pipe.execute()
                        return True
                    except WatchError:
                        if await self._applied(attempt):
                            return True
                        continue
        raise StoreError(f"Redis at {self.url}: delete of {key} lost {_MAX_ATTEMPTS} races in a row")

    async def _update(self, key: SessionKey, decide: Decide[R], what: str) -> R:
        """Read the entry under WATCH, `decide`, write only if nobody wrote in between."""
        self.forget_reads(key)  # the entry may change here
        name = self.names.entry(key)
        with self._errors(what):
            for _ in range(_MAX_ATTEMPTS):
                attempt = None
                async with self._r.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(name)
                        damage: str | None = None
                        raw: bytes | None = None
                        moved = ""
                        try:
                            raw = await pipe.get(name)
                        except ResponseError as exc:
                            if "WRONGTYPE" not in str(exc):
                                raise
                            damage = "the Redis value has the wrong type"
                        current: SessionEntry | None = None
                        if raw is not None:
                            try:
                                current = self._parse(key, raw)
                            except ValueError as exc:
                                damage = str(exc)
                            else:
                                last = await cast(
                                    "Awaitable[bytes | None]",
                                    pipe.lindex(self.names.transcript(current.session_id), -1),
                                )
                                current = self._with_progress(current, last)
                        if damage is not None:
                            current = recover_entry(key, raw or b"")
                        new, result = decide(current)
                        if new is None and damage is None:
                            return result
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if damage is not None:
                            moved = self.names.quarantine(key)
                            pipe.rename(name, moved)
                        written = new or current
                        if written is not None:
                            pipe.set(name, json.dumps(entry_to_json(written), separators=(",", ":")))
                        attempt = self._attempt_name()
                        pipe.set(attempt, b"1", px=_ATTEMPT_MS)
                        await pipe.execute()
                    except WatchError:
                        if not await self._applied(attempt):
                            continue
                if damage is not None:
                    report_quarantine(name, damage, moved, current)
                return result
        raise StoreError(f"Redis at {self.url}: {what} of {key} lost {_MAX_ATTEMPTS} races in a row")

    async def list_page(
        self, after: str, limit: int, keep: Callable[[SessionEntry], bool] | None = None, budget: int = 5000
    ) -> Page:
        """SCAN from the cursor `after` (Redis's own: a page may hold a few more than
        `limit`, as SCAN returns batches); damaged entries are left out."""
        head = f"{self.names.prefix}:entry:"
        cursor = int(after) if after.isdigit() else 0
        found: list[SessionEntry] = []
        scanned = 0
        with self._errors("list"):
            while True:
                cursor, names = await self._r.scan(
                    cursor=cursor, match=head + "*", count=max(10, min(limit, budget))
                )
                batch: list[SessionEntry] = []
                for name, raw in zip(names, await self._r.mget(names) if names else [], strict=True):
                    scanned += 1
                    hashed = name.decode("utf-8", "replace")[len(head) :]
                    try:
                        entry = entry_from_json(json.loads(raw)) if raw is not None else None
                    except (ValueError, UnicodeDecodeError):
                        entry = None
                    if entry is not None and _DIGEST.fullmatch(hashed) and digest(entry.key) == hashed:
                        batch.append(entry)
                if batch:
                    async with self._r.pipeline(transaction=False) as pipe:
                        for entry in batch:
                            pipe.lindex(self.names.transcript(entry.session_id), -1)
                        lasts = await pipe.execute()
                    batch = [self._with_progress(e, last) for e, last in zip(batch, lasts, strict=True)]
                found += [e for e in batch if keep is None or keep(e)]
                if cursor == 0 or len(found) >= limit or scanned >= budget:
                    return Page(found, str(cursor) if cursor else "", scanned)

    async def list(self) -> Listing:
        """Every entry under the prefix, by SCAN (never KEYS, which blocks Redis)."""
        entries: list[SessionEntry] = []
        damaged: list[Damaged] = []
        head = f"{self.names.prefix}:entry:"
        with self._errors("list"):
            names = [n async for n in self._r.scan_iter(match=head + "*", count=_SCAN_COUNT)]
            for i in range(0, len(names), _SCAN_COUNT):
                batch = names[i : i + _SCAN_COUNT]
                for name, raw in zip(batch, await self._r.mget(batch), strict=True):
                    where = name.decode("utf-8", "replace")
                    hashed = where[len(head) :]
                    if not _DIGEST.fullmatch(hashed):
                        continue  # another prefix that starts with ours
                    if raw is None:
                        if await self._r.type(name) != b"none":
                            damaged.append(Damaged(where, "the Redis value has the wrong type"))
                        continue
                    try:
                        entry = entry_from_json(json.loads(raw))
                    except (ValueError, UnicodeDecodeError) as exc:
                        damaged.append(Damaged(where, str(exc), find_key(raw)))
                        continue
                    if digest(entry.key) != hashed:
                        damaged.append(
                            Damaged(where, "entry holds a key that does not belong here", entry.key)
                        )
                        continue
                    entries.append(entry)
            if entries:
                async with self._r.pipeline(transaction=False) as pipe:
                    for entry in entries:
                        pipe.lindex(self.names.transcript(entry.session_id), -1)
                    lasts = await pipe.execute()
                entries = [self._with_progress(e, last) for e, last in zip(entries, lasts, strict=True)]
            async for name in self._r.scan_iter(match=f"{self.names.prefix}:quarantine:*", count=_SCAN_COUNT):
                raw = await self._r.get(name) if await self._r.type(name) == b"string" else None
                damaged.append(Damaged(name.decode("utf-8", "replace"), "quarantined", find_key(raw or b"")))
        entries.sort(key=lambda e: e.key)
        return Listing(entries, damaged)

    def forget_reads(self, key: str) -> None:
        found = self._reads.pop(key, None)
        if found is not None and found.entry is not None:
            sid = _SESSION_IN_RAW.search(found.entry)
            if sid is not None:
                self._tails_read.pop(sid.group(1).decode(), None)
