"""The scale-out store: the `SessionStore` protocol on Redis, for many processes on many hosts.

Keys (every name starts with `store.prefix`, so several bots can share one Redis; no
unvalidated input ever becomes part of a name):

    <prefix>:entry:<sha256(key)>            the entry, JSON (the file store's field names)
    <prefix>:turn:<sha256(key)>             the turn lock: a random token, with an expiry
    <prefix>:fence:<sha256(key)>            the key's fencing counter (INCR on every lock)
    <prefix>:transcript:<sessionId>         memory: a list of commits (JSON), oldest first
    <prefix>:commit:<commitId>              a stored commit's id, for a day: retries store once
    <prefix>:quarantine:<sha256(key)>:<ns>  a damaged entry moved aside, never overwritten
    <prefix>:blobs:<sessionId>              attachment bytes, a hash sha256 -> bytes
    <prefix>:blob-order:<sessionId>         their digests, oldest first (at most `blobs_max`)

The commit (a turn's only write) is one Lua script: it stores nothing unless the
caller's fencing token is still the key's counter and the entry still maps the key to
the commit's session; then it appends the commit and marks its id. A commit id already
marked is success without a second write, so redis-py's retry of a command whose reply
was lost stores it once. The entry's turn count and last interaction are read from the
last commit (`get` is one script too), so they always equal what was committed; the
entry itself is written only when a session is minted or reset. These scripts read
keys they derive from values (the transcript of the entry's session), which a Redis
Cluster would refuse: the store needs one Redis (or a primary with replicas).

Atomicity. `reserve`, `touch` and `reset` are one WATCH/MULTI loop: WATCH the entry,
read it, decide in Python, then MULTI/SET/EXEC, which Redis refuses if anyone wrote
the entry after the WATCH; the loop then re-reads and decides again. This keeps the
exact semantics of the file store, because freshness (`is_fresh`) and minting (`mint`)
stay Python callables: a Lua script would have to re-implement the freshness policy
(daily boundaries in local time) on the server, and Lua's cjson rounds timestamps to 14
digits. The price is that `mint` may be called more than once under contention; only
one minted entry is ever stored and returned as created, the others are discarded.
Two hosts racing on a brand-new key therefore adopt one session id, and a reset is never
reverted by a racing reserve (its SET makes the reserve's EXEC fail, and the retry
sees the reset's entry).

The turn lock (core/store/redis_lock.py) is a renewed `SET NX PX` with a random token.

Connection loss: commands are retried with exponential backoff (about 2.5 s in all);
after that, and for every other Redis error, the operation raises `StoreError` naming
the URL without its password.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.config import StoreSettings
from core.store import jsonl
from core.store.entries import (
    SESSION_ID,
    entry_from_json,
    entry_to_json,
    find_key,
    recover_entry,
    report_quarantine,
)
from core.store.redis_blobs import RedisBlobs
from core.store.redis_deliveries import RedisDeliveries
from core.store.redis_lock import TurnLocks, TurnReads, redis_errors
from core.types import (
    Admission,
    ChatMessage,
    Damaged,
    Fenced,
    FreshCheck,
    Listing,
    Minter,
    RequestClaim,
    SessionEntry,
    SessionKey,
    StoreError,
    TurnCommit,
    TurnLease,
)

log = logging.getLogger("chatlane.store")

R = TypeVar("R")
Decide = Callable[[SessionEntry | None], tuple[SessionEntry | None, R]]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_COMMIT_ID = re.compile(r"[0-9a-f]{32}")
_MAX_ATTEMPTS = 100
_SCAN_COUNT = 500
_STOP_TTL_S = 86_400
_COMMIT_MARK_S = 86_400
_TAIL_HINT_MAX = 1000
_SESSION_IN_RAW = re.compile(rb'"sessionId"\s*:\s*"([0-9a-f]{32})"')

# KEYS[1] entry; ARGV[1] transcript name prefix. The entry and its last commit.
_GET = """
local raw = redis.call('get', KEYS[1])
if not raw then return {false, false} end
local ok, obj = pcall(cjson.decode, raw)
if ok and type(obj) == 'table' and type(obj.sessionId) == 'string'
    and string.match(obj.sessionId, '^[0-9a-f]+$') and #obj.sessionId == 32 then
  return {raw, redis.call('lindex', ARGV[1] .. obj.sessionId, -1)}
end
return {raw, false}
"""

# KEYS[1] entry, KEYS[2] fence, KEYS[3] transcript, KEYS[4] commit mark;
# ARGV[1] token, ARGV[2] session id, ARGV[3] the commit, ARGV[4] transcript_max, ARGV[5] mark ttl s.
_COMMIT = """
if redis.call('exists', KEYS[4]) == 1 then return 'stored' end
if tonumber(redis.call('get', KEYS[2]) or '-1') ~= tonumber(ARGV[1]) then return 'fenced' end
local raw = redis.call('get', KEYS[1])
if not raw then return 'moved' end
local ok, obj = pcall(cjson.decode, raw)
if not ok or type(obj) ~= 'table' or obj.sessionId ~= ARGV[2] then return 'moved' end
redis.call('rpush', KEYS[3], ARGV[3])
redis.call('ltrim', KEYS[3], -tonumber(ARGV[4]), -1)
redis.call('set', KEYS[4], '1', 'EX', ARGV[5])
return 'ok'
"""


def safe_url(url: str) -> str:
    """`url` with no part of its userinfo (user or password) and no `password=` option.

    The userinfo ends at the URL's LAST `@`: a password holding `#`, `?`, `/` or `@`
    (not percent-encoded) would make a standard parser end the host early and print part
    of the password as a "host" or "fragment".
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<unparsable URL>"
    _userinfo, at, rest = rest.rpartition("@")
    masked = f"{scheme}://{'***@' if at else ''}{rest}"
    try:
        parts = urlsplit(masked)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError:
        return f"{scheme}://{'***@' if at else ''}<unparsable host>"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "password"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


BAD_URL_HINT = (
    "percent-encode any / ? # @ : in the password (e.g. # as %23), or put the password in the "
    "environment variable named by store.password_env"
)
REDIS_SCHEMES = ("redis", "rediss", "unix")


def url_problem(url: str) -> str:
    """Why redis-py would refuse `url`, in words that quote no part of it."""
    scheme = url.partition("://")[0].lower()
    if scheme not in REDIS_SCHEMES:
        return "it must start with redis://, rediss:// (TLS) or unix://"
    return BAD_URL_HINT


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class RedisStore:
    """`SessionStore` on Redis; safe for any number of processes on any number of hosts."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        url: str,
        prefix: str = "chatlane",
        transcript_max: int = 10_000,
        turn_lock_ttl_s: float = 30.0,
        blobs_max: int = 64,
    ) -> None:
        self._r = client
        self.url = safe_url(url)
        self.prefix = prefix
        self.transcript_max = transcript_max
        self.turn_lock_ttl_s = turn_lock_ttl_s
        self.blobs_max = blobs_max
        self._blobs = RedisBlobs(client, prefix, blobs_max)
        self._turn_locks = TurnLocks(client, url=self.url, ttl_s=turn_lock_ttl_s)
        self._get_script = client.register_script(_GET)
        self._reads: dict[str, TurnReads] = {}
        """Key -> what its turn lock's script read, while this process holds that lock."""
        self._tails_read: dict[str, TurnReads] = {}
        """Session id -> the same reads, for `tail` (valid while the lock is held)."""
        self._tail_hint = 64
        """Commits read with a turn lock: the largest `tail` asked for so far, at least 64."""
        self._commit_script = client.register_script(_COMMIT)
        self._deliveries = RedisDeliveries(client, prefix)

    @classmethod
    def from_settings(cls, settings: StoreSettings, password: str | None) -> RedisStore:
        """Connect as `[store]` says; `StoreError` (URL without password) if Redis is unreachable.

        The check is a blocking PING with a 5 s connect timeout, made once at startup
        like the file store's folder checks, so a wrong URL fails before any bot connects.
        """
        url = settings.url
        options: dict[str, Any] = {
            "password": password or None,
            "socket_connect_timeout": 5.0,
            "socket_timeout": 10.0,
        }
        try:
            with redis.Redis.from_url(url, **options) as probe:
                probe.ping()
        except ValueError:
            # redis-py's message can quote a piece of the password as a "port": never print it.
            raise StoreError(f"store.url {safe_url(url)!r} is not a Redis URL: {url_problem(url)}") from None
        except RedisError as exc:
            raise StoreError(f"cannot reach Redis at {safe_url(url)}: {exc}") from None
        client = aioredis.Redis.from_url(
            url,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=30,
            **options,
        )
        return cls(
            client,
            url=url,
            prefix=settings.prefix,
            transcript_max=settings.transcript_max,
            turn_lock_ttl_s=settings.turn_lock_ttl_s,
            blobs_max=settings.blobs_max,
        )

    # ------------------------------------------------------------------ names
    def entry_name(self, key: str) -> str:
        return f"{self.prefix}:entry:{_digest(key)}"

    def lock_name(self, key: str) -> str:
        return f"{self.prefix}:turn:{_digest(key)}"

    def fence_name(self, key: str) -> str:
        return f"{self.prefix}:fence:{_digest(key)}"

    def commit_name(self, commit_id: str) -> str:
        if not _COMMIT_ID.fullmatch(commit_id):
            raise ValueError(f"malformed commit id {commit_id[:40]!r}")
        return f"{self.prefix}:commit:{commit_id}"

    def transcript_name(self, session_id: str) -> str:
        if not SESSION_ID.fullmatch(session_id):
            raise ValueError(f"malformed session id {session_id[:40]!r}")
        return f"{self.prefix}:transcript:{session_id}"

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

    # --------------------------------------------------------------- protocol
    async def ping(self) -> None:
        """`StoreError` unless Redis answers."""
        with self._errors("ping"):
            await self._r.ping()

    async def get(self, key: SessionKey) -> SessionEntry | None:
        if (found := self._reads.get(key)) is not None:
            return self._entry_read_with_lock(key, found)
        with self._errors("get"):
            try:
                raw, last = await self._get_script(
                    keys=[self.entry_name(key)], args=[f"{self.prefix}:transcript:"]
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
        def decide(current: SessionEntry | None) -> tuple[SessionEntry | None, tuple[SessionEntry, bool]]:
            if current is not None and is_fresh(current):
                return None, (current, False)
            entry = mint(key)
            return entry, (entry, True)

        return await self._update(key, decide, "reserve")

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
        name = self.entry_name(key)
        with self._errors("delete"):
            for _ in range(_MAX_ATTEMPTS):
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
                        pipe.delete(name, self.transcript_name(session_id))
                        await pipe.execute()
                        return True
                    except WatchError:
                        continue
        raise StoreError(f"Redis at {self.url}: delete of {key} lost {_MAX_ATTEMPTS} races in a row")

    async def _update(self, key: SessionKey, decide: Decide[R], what: str) -> R:
        """Read the entry under WATCH, `decide`, write only if nobody wrote in between."""
        self._forget_reads(key)  # the entry may change here
        name = self.entry_name(key)
        with self._errors(what):
            for _ in range(_MAX_ATTEMPTS):
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
                                    pipe.lindex(self.transcript_name(current.session_id), -1),
                                )
                                current = self._with_progress(current, last)
                        if damage is not None:
                            current = recover_entry(key, raw or b"")
                        new, result = decide(current)
                        if new is None and damage is None:
                            return result
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if damage is not None:
                            moved = f"{self.prefix}:quarantine:{_digest(key)}:{time.time_ns()}"
                            pipe.rename(name, moved)
                        written = new or current
                        if written is not None:
                            pipe.set(name, json.dumps(entry_to_json(written), separators=(",", ":")))
                        await pipe.execute()
                    except WatchError:
                        continue
                if damage is not None:
                    report_quarantine(name, damage, moved, current)
                return result
        raise StoreError(f"Redis at {self.url}: {what} of {key} lost {_MAX_ATTEMPTS} races in a row")

    async def list(self) -> Listing:
        """Every entry under the prefix, by SCAN (never KEYS, which blocks Redis)."""
        entries: list[SessionEntry] = []
        damaged: list[Damaged] = []
        head = f"{self.prefix}:entry:"
        with self._errors("list"):
            names = [n async for n in self._r.scan_iter(match=head + "*", count=_SCAN_COUNT)]
            for i in range(0, len(names), _SCAN_COUNT):
                batch = names[i : i + _SCAN_COUNT]
                for name, raw in zip(batch, await self._r.mget(batch), strict=True):
                    where = name.decode("utf-8", "replace")
                    digest = where[len(head) :]
                    if not _DIGEST.fullmatch(digest):
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
                    if _digest(entry.key) != digest:
                        damaged.append(
                            Damaged(where, "entry holds a key that does not belong here", entry.key)
                        )
                        continue
                    entries.append(entry)
            if entries:
                async with self._r.pipeline(transaction=False) as pipe:
                    for entry in entries:
                        pipe.lindex(self.transcript_name(entry.session_id), -1)
                    lasts = await pipe.execute()
                entries = [self._with_progress(e, last) for e, last in zip(entries, lasts, strict=True)]
            async for name in self._r.scan_iter(match=f"{self.prefix}:quarantine:*", count=_SCAN_COUNT):
                raw = await self._r.get(name) if await self._r.type(name) == b"string" else None
                damaged.append(Damaged(name.decode("utf-8", "replace"), "quarantined", find_key(raw or b"")))
        entries.sort(key=lambda e: e.key)
        return Listing(entries, damaged)

    async def commit(self, commit: TurnCommit) -> None:
        key = commit.lease.key
        self._forget_reads(key)
        line = jsonl.encode_commit(commit.commit_id, commit.turns, commit.at, commit.records)
        names = [
            self.entry_name(key),
            self.fence_name(key),
            self.transcript_name(commit.session_id),
            self.commit_name(commit.commit_id),
        ]
        commit.lease.committing = True
        with self._errors("commit"):
            outcome = await self._commit_script(
                keys=names,
                args=[commit.lease.token, commit.session_id, line, self.transcript_max, _COMMIT_MARK_S],
            )
        if outcome == b"stored":
            log.info("commit %s of %s was already stored (a retry); stored once", commit.commit_id, key)
        elif outcome != b"ok":
            why = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
            log.warning("commit of a turn of %s refused (%s at token %d)", key, why, commit.lease.token)
            raise Fenced(f"commit of {key} refused: {why}")

    async def tail(self, session_id: str, n: int) -> builtins.list[ChatMessage]:
        name = self.transcript_name(session_id)
        if n <= 0:
            return []
        found = self._tails_read.get(session_id)
        if found is not None and n <= found.asked:
            lines = found.commits[-n:]  # read with the turn lock
        else:
            self._tail_hint = max(self._tail_hint, min(n, _TAIL_HINT_MAX))
            with self._errors("transcript read"):
                # redis-py types list commands as sync-or-async; this client is async. A
                # commit holds one record or more, so the last n commits hold the last n records.
                lines = await cast("Awaitable[list[bytes]]", self._r.lrange(name, -n, -1))
        records: list[ChatMessage] = []
        for line in lines:
            try:
                records.extend(jsonl.decode_line(line)[0])
            except (ValueError, UnicodeDecodeError):
                log.warning("transcript %s has an unreadable record (%d bytes); skipped", name, len(line))
        return records[-n:]

    # ------------------------------------------------------------ attachments
    async def put_blobs(self, session_id: str, data: Mapping[str, bytes]) -> None:
        """Store blobs (idempotent); keep the newest `blobs_max` (core/store/redis_blobs.py)."""
        self.transcript_name(session_id)  # validates the id
        with self._errors("blob write"):
            await self._blobs.put(session_id, data)

    async def get_blobs(self, session_id: str, digests: Sequence[str]) -> dict[str, bytes]:
        self.transcript_name(session_id)
        with self._errors("blob read"):
            return await self._blobs.get(session_id, digests)

    async def prune_session(self, session_id: str) -> None:
        with self._errors("prune"):
            await self._r.delete(self.transcript_name(session_id), *self._blobs.names(session_id))

    @contextlib.asynccontextmanager
    async def lock_turn(self, key: SessionKey) -> AsyncIterator[TurnLease]:
        """Hold the key's turn lock across every host; `Fenced` if it cannot be kept.

        The lock's script also reads the entry and the last commits of its session, so a
        turn's `get` and `tail` cost no round trip of their own: while this process holds
        the lock, nobody else writes the key (a fenced writer is refused)."""
        reads = (self.entry_name(key), f"{self.prefix}:transcript:", self._tail_hint)

        def keep(found: TurnReads) -> None:
            self._reads[key] = found

        try:
            async with self._turn_locks.hold(
                key, self.lock_name(key), self.fence_name(key), reads=reads, on_reads=keep
            ) as lease:
                yield lease
        finally:
            self._forget_reads(key)

    def _forget_reads(self, key: str) -> None:
        found = self._reads.pop(key, None)
        if found is not None and found.entry is not None:
            sid = _SESSION_IN_RAW.search(found.entry)
            if sid is not None:
                self._tails_read.pop(sid.group(1).decode(), None)

    # ----------------------------- deliveries and limits (core/store/redis_deliveries.py)
    async def mark_delivered(self, ids: Sequence[str], window_s: float) -> int:
        with self._errors("delivery check"):
            return await self._deliveries.mark_delivered(ids, window_s)

    async def claim_request(self, request_id: str, fingerprint: str, window_s: float) -> RequestClaim:
        with self._errors("request claim"):
            return await self._deliveries.claim_request(request_id, fingerprint, window_s)

    async def finish_request(self, request_id: str, fingerprint: str, answer: bytes, window_s: float) -> None:
        with self._errors("request answer"):
            await self._deliveries.finish_request(request_id, fingerprint, answer, window_s)

    async def release_request(self, request_id: str) -> None:
        with self._errors("request release"):
            await self._deliveries.release_request(request_id)

    async def count_message(self, sender: str, per_minute: int, per_day: int) -> Admission:
        with self._errors("limit count"):
            return await self._deliveries.count_message(sender, per_minute, per_day)

    def stop_name(self, key: str) -> str:
        return f"{self.prefix}:stop:{_digest(key)}"

    async def request_stop(self, key: SessionKey) -> None:
        """INCR of the key's stop counter (kept a day: a turn polls it only while it runs)."""
        name = self.stop_name(key)
        with self._errors("stop request"):
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, _STOP_TTL_S)
                await pipe.execute()

    async def stop_requests(self, key: SessionKey) -> int:
        with self._errors("stop flag read"):
            raw = await self._r.get(self.stop_name(key))
        return int(raw) if raw is not None else 0

    async def close(self) -> None:
        await self._r.aclose()
