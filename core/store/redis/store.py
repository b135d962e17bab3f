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

The store has its parts: `sessions` (entries.py: names, reads, the WATCH/MULTI loop
that mints and resets, listing), the turn locks (lock.py: a renewed `SET NX PX` with a
random token), the deliveries (deliveries.py: delivery marks, request claims, sender
limits) and blobs (blobs.py). URLs are printed as urls.py says (never a password).

Connection loss: commands are retried with exponential backoff (about 2.5 s in all);
after that, and for every other Redis error, the operation raises `StoreError` naming
the URL without its password.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiofiles
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.config import StoreSettings
from core.model import (
    Admission,
    ChatMessage,
    Fenced,
    FireClaim,
    FireMark,
    FreshCheck,
    Listing,
    Minter,
    Page,
    RequestClaim,
    SessionEntry,
    SessionKey,
    StoreError,
    TurnCommit,
    TurnLease,
)
from core.store import jsonl
from core.store.base import Approvals
from core.store.redis.approvals import RedisApprovals
from core.store.redis.blobs import RedisBlobs
from core.store.redis.deliveries import RedisDeliveries
from core.store.redis.entries import RedisNames, RedisSessions, session_in
from core.store.redis.fires import RedisFires
from core.store.redis.inbox import DONE_LUA, OWNED_LUA, RedisInbox
from core.store.redis.lock import TurnLocks, TurnReads, redis_errors
from core.store.redis.urls import safe_url, url_problem
from core.store.redis.warm import WarmTails

log = logging.getLogger("chatlane.store")

_STOP_TTL_S = 86_400
_MGET_CHUNK = 1000
"""Keys per MGET of the stop poller: one long command would hold Redis up for the others."""
_COMMIT_MARK_S = 86_400
_TAIL_HINT_MAX = 1000

# KEYS[1] entry, KEYS[2] fence, KEYS[3] transcript, KEYS[4] commit mark, KEYS[5..7] the
# key's inbox (hash, order, index), KEYS[8] the turn lock; ARGV[1] token, ARGV[2] session
# id, ARGV[3] the commit, ARGV[4] transcript_max, ARGV[5] mark ttl s, ARGV[6] the key,
# ARGV[7] the lock's random token ('' to keep the lock), ARGV[8] this process's inbox
# owner id, ARGV[9..] the inbox items it answered: done in the same script that stores
# the turn (core/store/redis/inbox.py), refused ('disowned') unless this process owns
# them all (another adopted them after this process's lease lapsed, or answered them).
# A stored turn lets go of the lock (a token compare, as the release script): the turn's
# last round trip is its commit. A retry whose first attempt was stored does the same
# compare, harmless if someone has taken the lock since.
_COMMIT = (
    DONE_LUA
    + OWNED_LUA
    + """
local function let_go()
  if ARGV[7] ~= '' and redis.call('get', KEYS[8]) == ARGV[7] then redis.call('del', KEYS[8]) end
end
if redis.call('exists', KEYS[4]) == 1 then
  let_go()
  return 'stored'
end
if tonumber(redis.call('get', KEYS[2]) or '-1') ~= tonumber(ARGV[1]) then return 'fenced' end
local raw = redis.call('get', KEYS[1])
if not raw then return 'moved' end
local ok, obj = pcall(cjson.decode, raw)
if not ok or type(obj) ~= 'table' or obj.sessionId ~= ARGV[2] then return 'moved' end
local answered = {unpack(ARGV, 9)}
local refused = inbox_not_owned(KEYS[5], ARGV[8], answered)
if refused then return refused end
redis.call('rpush', KEYS[3], ARGV[3])
redis.call('ltrim', KEYS[3], -tonumber(ARGV[4]), -1)
redis.call('set', KEYS[4], '1', 'EX', ARGV[5])
if #answered > 0 then inbox_done(KEYS[5], KEYS[6], KEYS[7], ARGV[6], answered) end
let_go()
return 'ok'
"""
)


class RedisStore:
    """`SessionStore` on Redis; safe for any number of processes on any number of hosts.

    It has its parts: `names` (every key it keeps), `sessions` (the `Sessions` protocol,
    and what a held turn lock read), the turn locks, the deliveries and the blobs. The
    ledger (commit, tail, lock_turn) and the stop signals are its own.
    """

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
        self.names = RedisNames(prefix)
        self.sessions = RedisSessions(client, url=self.url, names=self.names)
        self._deliveries = RedisDeliveries(client, prefix)
        self._blobs = RedisBlobs(client, prefix, blobs_max)
        self._turn_locks = TurnLocks(client, url=self.url, ttl_s=turn_lock_ttl_s)
        self._tail_hint = 64
        self._warm = WarmTails()
        """The last commits this process wrote per key, so a lock need not read them again."""
        self._stops_read: dict[str, int] = {}
        """Key -> its stop counter as its held turn lock read it, until a turn asks once."""
        """Commits read with a turn lock: the largest `tail` asked for so far, at least 64."""
        self._commit_script = client.register_script(_COMMIT)
        self._approvals = RedisApprovals(client, prefix, self.url)
        self._fires = RedisFires(client, prefix)
        self.inbox = RedisInbox(client, prefix, self.url, turn_lock_ttl_s, uuid.uuid4().hex)
        """The durable inbox (core/store/redis/inbox.py); the commit script marks its items done."""

    @property
    def approvals(self) -> Approvals:
        return self._approvals

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return redis_errors(self.url, what)

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

    # --------------------------------------------------------------- sessions
    async def get(self, key: SessionKey) -> SessionEntry | None:
        return await self.sessions.get(key)

    async def reserve(self, key: SessionKey, is_fresh: FreshCheck, mint: Minter) -> tuple[SessionEntry, bool]:
        return await self.sessions.reserve(key, is_fresh, mint)

    async def set_model(self, key: SessionKey, session_id: str, model: str | None) -> SessionEntry | None:
        return await self.sessions.set_model(key, session_id, model)

    async def reset(self, key: SessionKey, mint: Minter) -> SessionEntry:
        return await self.sessions.reset(key, mint)

    async def delete(self, key: SessionKey, session_id: str) -> bool:
        return await self.sessions.delete(key, session_id)

    async def list(self) -> Listing:
        return await self.sessions.list()

    async def list_page(
        self, after: str, limit: int, keep: Callable[[SessionEntry], bool] | None = None, budget: int = 5000
    ) -> Page:
        return await self.sessions.list_page(after, limit, keep, budget)

    # ----------------------------------------------------------------- ledger
    async def ping(self) -> None:
        """`StoreError` unless Redis answers."""
        with self._errors("ping"):
            await self._r.ping()

    async def commit(self, commit: TurnCommit) -> None:
        key = commit.lease.key
        found = self.sessions.read_with_lock(commit.session_id)
        self.sessions.forget_reads(key)
        line = jsonl.encode_commit(commit.commit_id, commit.turns, commit.at, commit.records, commit.answered)
        held = self._turn_locks.let_go_in_commit(commit.lease)
        lock, lock_token = held if held is not None else (self.names.lock(key), "")
        names = [
            self.names.entry(key),
            self.names.fence(key),
            self.names.transcript(commit.session_id),
            self.names.commit(commit.commit_id),
            *self.inbox.names(key),
            lock,
        ]
        args: list[str | int | float | bytes] = [
            commit.lease.token,
            commit.session_id,
            line,
            self.transcript_max,
            _COMMIT_MARK_S,
            key,
            lock_token,
            self.inbox.owner,
        ]
        commit.lease.committing = True
        try:
            with self._errors("commit"):
                outcome = await self._commit_script(keys=names, args=[*args, *commit.answered])
        except StoreError:
            self._warm.forget(key)
            raise
        if outcome in (b"ok", b"stored"):
            self._turn_locks.released(commit.lease)
            base = (found.commits, found.asked) if found is not None else None
            self._warm.committed(key, commit.session_id, line, base, self._keep_max())
        else:
            self._warm.forget(key)
        if outcome == b"stored":
            log.info("commit %s of %s was already stored (a retry); stored once", commit.commit_id, key)
        elif outcome != b"ok":
            why = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
            log.warning("commit of a turn of %s refused (%s at token %d)", key, why, commit.lease.token)
            raise Fenced(f"commit of {key} refused: {why}")

    def _keep_max(self) -> tuple[int, int]:
        """(commits a lock reads, commits a transcript keeps): what `WarmTails` mirrors."""
        return self._tail_hint, self.transcript_max

    async def tail(self, session_id: str, n: int) -> builtins.list[ChatMessage]:
        name = self.names.transcript(session_id)
        if n <= 0:
            return []
        found = self.sessions.read_with_lock(session_id)
        if found is not None and n <= found.asked:
            kept = self._warm.records(session_id, found.commits, n)
            if kept is not None:
                return kept  # read with the turn lock, decoded by an earlier turn
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
        """Store blobs (idempotent); keep the newest `blobs_max` (blobs.py)."""
        self.names.transcript(session_id)  # validates the id
        with self._errors("blob write"):
            await self._blobs.put(session_id, data)

    async def put_blob_files(self, session_id: str, files: Mapping[str, Path]) -> None:
        """`put_blobs` from files, one at a time: a Redis value is sent whole, so this holds
        one file's bytes while it is stored (read off the loop with aiofiles)."""
        for sha, src in files.items():
            async with aiofiles.open(src, "rb") as f:
                data = bytes(await f.read())
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError("a blob must be stored under the sha256 of its bytes")
            await self.put_blobs(session_id, {sha: data})
            del data

    async def get_blobs(self, session_id: str, digests: Sequence[str]) -> dict[str, bytes]:
        self.names.transcript(session_id)
        with self._errors("blob read"):
            return await self._blobs.get(session_id, digests)

    async def prune_session(self, session_id: str) -> None:
        with self._errors("prune"):
            await self._r.delete(self.names.transcript(session_id), *self._blobs.names(session_id))

    @contextlib.asynccontextmanager
    async def lock_turn(self, key: SessionKey) -> AsyncIterator[TurnLease]:
        """Hold the key's turn lock across every host; `Fenced` if it cannot be kept.

        The lock's script also reads the entry and the last commits of its session, so a
        turn's `get` and `tail` cost no round trip of their own: while this process holds
        the lock, nobody else writes the key (a fenced writer is refused)."""
        hint = self._tail_hint
        reads = (
            self.names.entry(key),
            self.names.transcripts,
            hint,
            self.names.stop(key),
            self._warm.expect(key, hint),
        )

        def keep(found: TurnReads) -> None:
            self._stops_read[key] = found.stop
            sid = session_in(found.entry) if found.entry is not None else None
            if sid is None:
                self._warm.forget(key)
            elif not found.warm:
                self._warm.keep(key, sid, found.commits, found.asked)
            elif (kept := self._warm.lines(key)) is not None and kept[0] == sid:
                found = replace(found, commits=kept[1], asked=kept[2])
            else:
                return  # kept commits dropped meanwhile: the turn reads as without a lock
            self.sessions.keep_reads(key, found)

        try:
            async with self._turn_locks.hold(
                key, self.names.lock(key), self.names.fence(key), reads=reads, on_reads=keep
            ) as lease:
                yield lease
        finally:
            self.sessions.forget_reads(key)
            self._stops_read.pop(key, None)

    # ------------------------------------- deliveries and limits (deliveries.py)
    async def mark_delivered(self, ids: Sequence[str], window_s: float) -> int:
        with self._errors("delivery check"):
            return await self._deliveries.mark_delivered(ids, window_s)

    async def claim_request(
        self, request_id: str, fingerprint: str, owner: str, lease_s: float, window_s: float
    ) -> RequestClaim:
        with self._errors("request claim"):
            return await self._deliveries.claim_request(request_id, fingerprint, owner, lease_s, window_s)

    async def renew_request(self, request_id: str, owner: str, lease_s: float) -> bool:
        with self._errors("request lease renewal"):
            return await self._deliveries.renew_request(request_id, owner, lease_s)

    async def finish_request(
        self, request_id: str, owner: str, fingerprint: str, answer: bytes, window_s: float
    ) -> None:
        with self._errors("request answer"):
            await self._deliveries.finish_request(request_id, owner, fingerprint, answer, window_s)

    async def release_request(self, request_id: str, owner: str) -> None:
        with self._errors("request release"):
            await self._deliveries.release_request(request_id, owner)

    async def count_message(self, sender: str, per_minute: int, per_day: int) -> Admission:
        with self._errors("limit count"):
            return await self._deliveries.count_message(sender, per_minute, per_day)

    # ------------------------------------------- scheduled fires (core/store/redis/fires.py)
    async def claim_fire(self, schedule: str, due: float, token: str, lease_s: float) -> FireClaim:
        with self._errors("fire claim"):
            return await self._fires.claim(schedule, due, token, lease_s)

    async def renew_fire(self, schedule: str, due: float, token: str, lease_s: float) -> bool:
        with self._errors("fire renewal"):
            return await self._fires.renew(schedule, due, token, lease_s)

    async def finish_fire(self, schedule: str, due: float, token: str, outcome: str) -> None:
        with self._errors("fire finish"):
            await self._fires.finish(schedule, due, token, outcome)

    async def fire_mark(self, schedule: str) -> FireMark | None:
        with self._errors("schedule mark read"):
            return await self._fires.mark(schedule)

    async def advance_fire_mark(self, schedule: str, mark: FireMark) -> FireMark:
        with self._errors("schedule mark write"):
            return await self._fires.advance(schedule, mark)

    async def save_schedule(self, name: str, spec: bytes) -> None:
        with self._errors("schedule save"):
            await self._fires.save(name, spec)

    async def saved_schedules(self) -> dict[str, bytes]:
        with self._errors("schedule read"):
            return await self._fires.saved_all()

    async def drop_schedule(self, name: str) -> None:
        with self._errors("schedule drop"):
            await self._fires.drop(name)

    # ---------------------------------------------------------------- signals
    async def request_stop(self, key: SessionKey) -> None:
        """INCR of the key's stop counter (kept a day: a turn polls it only while it runs),
        once per call even when redis-py sends it again (core/store/redis/deliveries.py)."""
        with self._errors("stop request"):
            await self._deliveries.request_stop(self.names.stop(key), _STOP_TTL_S)

    async def stop_requests(self, key: SessionKey) -> int:
        """The key's stop counter. The first read under a held turn lock is the value the
        lock's script read (no round trip): a `/stop` sent after the lock was taken then
        changes the next poll's value and stops this turn; later reads ask Redis."""
        if (seen := self._stops_read.pop(key, None)) is not None:
            return seen
        with self._errors("stop flag read"):
            raw = await self._r.get(self.names.stop(key))
        return int(raw) if raw is not None else 0

    async def stop_requests_many(self, keys: Sequence[SessionKey]) -> dict[SessionKey, int]:
        """The stop counters of `keys` in one round trip (MGETs of a bounded size in one
        pipeline). The lock's cached first read is left for the turn's own baseline."""
        if not keys:
            return {}
        names = [self.names.stop(key) for key in keys]
        with self._errors("stop flags read"):
            async with self._r.pipeline(transaction=False) as pipe:
                for at in range(0, len(names), _MGET_CHUNK):
                    pipe.mget(names[at : at + _MGET_CHUNK])
                chunks = await pipe.execute()
        values = [v for chunk in chunks for v in chunk]
        return {key: int(raw) if raw is not None else 0 for key, raw in zip(keys, values, strict=True)}

    async def close(self) -> None:
        try:
            await self.inbox.release()
        except StoreError as exc:
            log.warning("owner lease not released (other processes adopt after it lapses): %s", exc)
        await self._r.aclose()
