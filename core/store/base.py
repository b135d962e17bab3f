"""The store's protocols: what a backend implements (files/ and redis/ do)."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from core.model import (
    Admission,
    Approval,
    ChatMessage,
    Decision,
    FireClaim,
    FireMark,
    FreshCheck,
    InboxItem,
    InboxView,
    Listing,
    Minter,
    Page,
    RequestClaim,
    SessionEntry,
    SessionKey,
    TurnCommit,
    TurnLease,
)


@runtime_checkable
class BlobStore(Protocol):
    """Attachment bytes, content-addressed per session (stores that keep files offer it)."""

    async def put_blobs(self, session_id: str, blobs: Mapping[str, bytes]) -> None:
        """Store each blob under its sha256 (idempotent); durable before it returns."""
        ...

    async def put_blob_files(self, session_id: str, files: Mapping[str, Path]) -> None:
        """Store each file's bytes under its sha256, like `put_blobs`, read from the file in
        chunks where the backend can (files: bounded memory whatever the size; Redis keeps
        values whole, so it holds one file at a time). The files stay the caller's; a
        file whose bytes do not match its digest is refused (ValueError)."""
        ...

    async def get_blobs(self, session_id: str, digests: Sequence[str]) -> dict[str, bytes]:
        """The blobs found (missing or pruned ones are left out)."""
        ...

    async def prune_session(self, session_id: str) -> None:
        """Forget a session's transcript and every blob of it."""
        ...


class Sessions(Protocol):
    """Conversations and their sessions: one entry per key.

    `reserve` is atomic across every process using the store: callers racing on a key
    whose entry is missing or stale adopt one minted entry.
    """

    async def get(self, key: SessionKey) -> SessionEntry | None: ...

    async def reserve(
        self, key: SessionKey, is_fresh: FreshCheck, mint: Minter
    ) -> tuple[SessionEntry, bool]: ...

    async def reset(self, key: SessionKey, mint: Minter) -> SessionEntry: ...

    async def set_model(self, key: SessionKey, session_id: str, model: str | None) -> SessionEntry | None:
        """Store the conversation's `/model` choice on its entry (compare-and-set on the
        session id, like `touch`); None if the key no longer maps to `session_id`."""
        ...

    async def list(self) -> Listing: ...

    async def list_page(
        self, after: str, limit: int, keep: Callable[[SessionEntry], bool] | None = None, budget: int = 5000
    ) -> Page:
        """Up to `limit` entries that `keep` accepts, in the store's order, after the
        cursor `after` ("" for the first page), reading at most `budget` entries: its cost
        is that of the page (plus the entries a filter skips), never that of the whole
        store. Damaged entries are skipped (`list` reports them). The order is stable,
        not by activity; entries written meanwhile may or may not appear."""
        ...

    async def delete(self, key: SessionKey, session_id: str) -> bool:
        """Remove the key's entry and that session's transcript, only if the key still
        maps to `session_id` (a compare-and-delete: never a session minted meanwhile).
        True if it was removed."""
        ...


class Ledger(Protocol):
    """A turn's lock and its one write.

    `lock_turn` excludes turns of one key across every process using the store and hands
    out a `TurnLease` whose fencing token grows with every acquisition. `commit` is a
    turn's only write: its records and the entry's progress (turn count, last
    interaction) are stored whole or not at all; it is fenced (refused with `Fenced`,
    nothing written, unless the lease's token is still the key's current one and the key
    still maps to the commit's session id) and idempotent (a retried commit id is stored
    once). An entry's `turns` and `last_interaction_at` are those of its last commit.
    """

    async def commit(self, commit: TurnCommit) -> None:
        """Store a turn durably, whole or not at all; `Fenced` if refused, `StoreError` if
        the store failed (and nothing was stored)."""
        ...

    async def tail(self, session_id: str, n: int) -> builtins.list[ChatMessage]: ...

    def lock_turn(self, key: SessionKey) -> AbstractAsyncContextManager[TurnLease]:
        """Exclude other turns of `key`; raises `Fenced` out of the block if the lock is lost."""
        ...


class Deliveries(Protocol):
    """Platform deliveries answered once, and retried requests (`Idempotency-Key`) run once,
    across every process on the store.

    A request claim is a lease. `claim_request` gives the caller (`owner`, a random
    token the caller makes once per request) the request for `lease_s`; the owner
    renews it (`renew_request`) while it works, then stores its answer
    (`finish_request`) or gives the request back (`release_request`) when it stored
    nothing. Another caller with the same request gets the owner's answer once there is
    one, waits while the lease runs, and takes the request over once the lease lapsed
    unanswered (the owner died mid-turn): a dead owner blocks a request for one lease,
    not for the window. Every call is safe to send twice (a backend that retries a
    command whose reply was lost recognises its own effect by the owner token).
    """

    async def mark_delivered(self, ids: Sequence[str], window_s: float) -> int:
        """Remember every id for `window_s`, in one atomic step shared by every process on
        the store. 0 when none was remembered before (a first delivery), else the 1-based
        index of the first that was (a duplicate). A retry of this very call after a lost
        reply still gets 0: it is the same delivery, not a duplicate."""
        ...

    async def claim_request(
        self, request_id: str, fingerprint: str, owner: str, lease_s: float, window_s: float
    ) -> RequestClaim:
        """Own `request_id` (atomic across processes): `new` with `owner` when nobody holds
        it, when `owner` already does, or when its owner's lease lapsed unanswered and
        `fingerprint` is the same; else the stored claim (someone else's fingerprint,
        and its answer once finished). The claim is remembered for `window_s`."""
        ...

    async def renew_request(self, request_id: str, owner: str, lease_s: float) -> bool:
        """Extend `owner`'s lease by `lease_s` from now; False once it is not the owner
        (taken over after a lapse, answered, or released)."""
        ...

    async def finish_request(
        self, request_id: str, owner: str, fingerprint: str, answer: bytes, window_s: float
    ) -> None:
        """Store the owner's answer; later claims get it until `window_s` has passed. An
        answer already stored by another owner (a successor after a lapse) is kept."""
        ...

    async def release_request(self, request_id: str, owner: str) -> None:
        """Forget `owner`'s unanswered claim, so a retry may run it (no-op otherwise)."""
        ...


class SenderLimits(Protocol):
    """`[limits]`: messages per sender, counted once across every process on the store."""

    async def count_message(self, sender: str, per_minute: int, per_day: int) -> Admission:
        """Count one message of `sender` against fixed windows that start at its first
        message (0 = no limit), atomically across processes. A limited message is not
        counted, so it never uses up budget."""
        ...


class Signals(Protocol):
    """Requests to whichever process runs a turn (`/stop` across processes)."""

    async def request_stop(self, key: SessionKey) -> None:
        """Ask whichever process runs a turn of `key` to stop it (`/stop` across processes):
        advances the key's stop counter, which `stop_requests` reads."""
        ...

    async def stop_requests(self, key: SessionKey) -> int:
        """How many stops were ever requested for `key` (0 if none); cheap, polled during turns."""
        ...

    async def stop_requests_many(self, keys: Sequence[SessionKey]) -> dict[SessionKey, int]:
        """`stop_requests` of every key at once (each key of `keys` is in the answer): what
        a process's one stop poller reads for all the turns running there, in one batch
        (a stat per key on files, one round trip on Redis), never one read per turn."""
        ...


class Approvals(Protocol):
    """Tool calls waiting for a person, and what each tool call of a turn came to.

    Every write survives its own retry: opening an approval again with its id, deciding
    it again with the same decision by the same person, or storing a tool outcome again
    under its key changes nothing.
    """

    async def open_approval(self, approval: Approval) -> None:
        """Store a pending approval (kept a day past its deadline)."""
        ...

    async def get_approval(self, approval_id: str) -> Approval | None: ...

    async def decide_approval(self, approval_id: str, decision: Decision, by: str) -> Approval | None:
        """Decide a pending approval, atomically across processes: the first decision
        stands. Returns the approval as stored afterwards (whoever decided it), None when
        there is no such approval."""
        ...

    async def put_tool_outcome(self, turn_id: str, call_key: str, outcome: Mapping[str, object]) -> None:
        """Store what a tool call came to, durably, before the model is shown it."""
        ...

    async def get_tool_outcome(self, turn_id: str, call_key: str) -> dict[str, object] | None: ...


class Fires(Protocol):
    """Scheduled fires claimed once across every process on the store, each schedule's
    progress (its mark), and schedules made at runtime (reminders, `schedules run`).

    Claims are leases: the owner renews its claim while the fire runs; a lapsed claim is
    taken over (`takeover`). Every write carries the caller's per-attempt token, so a
    retried command recognises its own claim instead of mistaking it for another's.
    """

    async def claim_fire(self, schedule: str, due: float, token: str, lease_s: float) -> FireClaim:
        """Own the fire of `schedule` at `due` for `lease_s` unless it is done (finished, or
        at or before the schedule's mark) or another token's lease is live; atomic."""
        ...

    async def renew_fire(self, schedule: str, due: float, token: str, lease_s: float) -> bool:
        """Extend this token's claim; False when it is no longer this token's."""
        ...

    async def finish_fire(self, schedule: str, due: float, token: str, outcome: str) -> None:
        """Mark the fire done with its outcome (kept until the schedule's mark passes it)."""
        ...

    async def fire_mark(self, schedule: str) -> FireMark | None:
        """The schedule's progress; None before its first mark."""
        ...

    async def advance_fire_mark(self, schedule: str, mark: FireMark) -> FireMark:
        """Raise the schedule's mark to `mark` (never lowers it); the fires at or before it
        are forgotten. Returns the stored mark."""
        ...

    async def save_schedule(self, name: str, spec: bytes) -> None:
        """Keep a schedule made at runtime (a one-shot reminder) for every process."""
        ...

    async def saved_schedules(self) -> dict[str, bytes]:
        """Every schedule saved and not dropped, by name."""
        ...

    async def drop_schedule(self, name: str) -> None: ...


class Inbox(Protocol):
    """Accepted messages per conversation, durable until a turn's commit answers them.

    `append` is durable before it returns and idempotent on the item id (a retry stores
    once). An item leaves the pending set when a `TurnCommit` naming it in `answered` is
    stored (same atomic step) or by `settle` (commands, drops, stops, parking). Items
    belong to the process (`owner`) that appended or adopted them while it lives;
    `adopt` takes over those of dead owners. `keys` is an index: only conversations with
    pending items, never a scan of every session.
    """

    owner: str
    """This process's owner id (random per store object)."""

    renew_every_s: float
    """How often `heartbeat` must be called at least for this process to stay alive."""

    async def append(self, item: InboxItem) -> InboxItem:
        """Store `item` (owned by this process) durably; the stored item, with its `seq`."""
        ...

    async def keys(self) -> builtins.list[SessionKey]:
        """Conversations with pending items (the index)."""
        ...

    async def items(self, key: SessionKey) -> InboxView:
        """The conversation's pending items in order, and its parked ones. A damaged record
        is quarantined (reported, counted) and never blocks the others."""
        ...

    async def adopt(self, key: SessionKey, item_ids: Sequence[str]) -> builtins.list[str]:
        """Make this process the owner of those items whose owner is dead (or is this
        process); the ids now owned here. Atomic against other adopters."""
        ...

    async def note(
        self,
        key: SessionKey,
        item_id: str,
        *,
        answer_ids: Sequence[str] | None = None,
        attempt: bool = False,
    ) -> None:
        """Remember the platform messages an item's answer streams into (all of them, in
        order: they replace what was noted before), and/or that a turn started on it
        (`attempts` + 1). Survives a process crash. A done item is left alone."""
        ...

    async def settle(self, key: SessionKey, item_ids: Sequence[str], *, park: bool = False) -> None:
        """Take items out of the pending set without a commit (done, or parked: kept for
        `sessions show` but never run again); durable before it returns."""
        ...

    async def heartbeat(self) -> None:
        """Show that this process (`owner`) is alive; called periodically (Redis renews its
        lease; the file store holds an OS lock that dies with the process)."""
        ...

    def lease_held(self) -> bool:
        """Whether this process's items are surely still its own, by its clock: False once
        the owner lease may have lapsed (Redis: no renewal reached it for a lease, or a
        renewal found it expired), until `forget_lapse` after a renewal. Other processes
        may then have adopted its items: it must stop answering them."""
        ...

    def forget_lapse(self) -> None:
        """The lapse was acted on (what this process held is given up): `lease_held` is
        True again if a renewal succeeded since."""
        ...

    async def owned(self, key: SessionKey, item_ids: Sequence[str]) -> bool:
        """Whether every one of the items is still pending and owned by this process. A
        commit answering items that are not is refused (`Fenced`) all the same."""
        ...


class SessionStore(Sessions, Ledger, Deliveries, SenderLimits, Signals, Fires, Protocol):
    """Everything a backend gives, in parts a backend implements and tests one by one;
    the durable inbox is a part it *has* (`inbox`)."""

    @property
    def inbox(self) -> Inbox: ...

    @property
    def approvals(self) -> Approvals:
        """Approvals and tool outcomes (core/store/*/approvals.py)."""
        ...

    async def close(self) -> None: ...
