"""The contracts every other module builds on.

An adapter turns a platform event into an `Inbound` and hands it to the gateway with
a `Responder`; the gateway answers through that responder with `Reply` objects. The
gateway keeps memory in a `SessionStore` and asks an `Agent` for the answer.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, NewType, Protocol, runtime_checkable

SessionKey = NewType("SessionKey", str)
"""A canonical, validated key: `agent:<agentId>:<platform>:<user>:<channel>[:<thread>]`."""

Role = Literal["system", "user", "assistant"]


class FileSource(Protocol):
    """A file attached to an incoming message, not yet read (see core/attachments.py).

    Adapters build these without any I/O; the gateway reads them inside the turn, under
    the caps of `[attachments]`. Implementations must not show secrets in `repr`.
    """

    @property
    def name(self) -> str: ...

    @property
    def declared_size(self) -> int | None:
        """The size the platform announced, if any (checked before downloading)."""
        ...

    async def fetch(self, max_bytes: int) -> bytes:
        """The bytes; `FileTooLarge` past `max_bytes`, `FileUnavailable` when unreadable."""
        ...


class FileTooLarge(Exception):
    """A file is larger than the configured cap."""


class FileUnavailable(Exception):
    """A file could not be read; the message is a short reason fit for a person."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from a person, stripped of everything platform-specific."""

    platform: str
    user: str
    channel: str
    text: str
    message_id: str
    thread: str | None = None
    is_direct: bool = False
    mentioned_bot: bool = False
    display_name: str = ""
    space: str | None = None
    """Discord guild / Slack team the message was sent in (None in a DM or over HTTP)."""
    parent_channel: str | None = None
    """For a Discord thread: the channel it belongs to (bindings match it)."""
    roles: tuple[str, ...] = ()
    """The sender's role ids (Discord)."""
    agent: str | None = None
    """An agent asked for by name (the HTTP API's `model`); overrides `[[bindings]]`."""
    attachments: tuple[FileSource, ...] = ()
    """Files on the message, read by the gateway during the turn."""
    sender: str = ""
    """Who `[limits]` counts this message against, when not `user` (HTTP: the API token of
    an anonymous request)."""


ReplyKind = Literal["answer", "merged", "failure", "dropped", "notice", "shutdown", "limited", "stopped"]
"""`answer`: the turn's reply. `merged`: this message was answered together with later
ones (collect/interrupt modes) and `text` is that shared answer. `failure`: the agent
or the store failed; `text` is a plain message for a person. `dropped`: the queue was
full and this message will not be answered. `notice`: a command's confirmation (e.g. a
reset). `shutdown`: the process is stopping and nothing of this message was stored, so
it is safe to send again. `limited`: the sender is over `[limits]`; nothing was stored;
`text` is the "slow down" notice for the first such message of a window and empty for
the others (send nothing then). `stopped`: someone sent `/stop` while this message was
being answered; its turn was cancelled (the message stays in memory, marked interrupted)."""

CancelReason = Literal["interrupted", "stopped", "shutdown", "retry"]
"""Why a running turn was cancelled: a newer message (interrupt mode), `/stop`, shutdown,
or `retry`: its commit was fenced out, nothing was stored, and the same message is
answered again from the start (what was shown of the answer is void, not cut off)."""


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    kind: ReplyKind
    session_key: SessionKey
    session_id: str = ""
    turn: int = 0


AttachmentKind = Literal["image", "text"]


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """What a transcript keeps of a file: a reference; the bytes live in the store's blobs."""

    name: str
    mime: str
    """Sniffed from the bytes, never taken from the name or the sender."""
    size: int
    sha256: str
    kind: AttachmentKind
    width: int = 0
    height: int = 0
    lines: int = 0


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One transcript record."""

    role: Role
    content: str
    at: float = 0.0
    message_id: str = ""
    interrupted: bool = False
    summary: bool = False
    """A compaction summary: it stands for the records before it, except the last `keeps`."""
    keeps: int = 0
    """For a summary: how many records just before it are still sent verbatim after it."""
    attachments: tuple[AttachmentRef, ...] = ()
    author: str = ""
    """Who wrote it, by display name (backfilled records; empty for the session's own)."""
    backfill: bool = False
    """Read from the channel or thread when the session began, not said to the bot."""


@dataclass(frozen=True, slots=True)
class SessionEntry:
    key: SessionKey
    session_id: str
    platform: str
    created_at: float
    session_started_at: float
    last_interaction_at: float
    updated_at: float
    turns: int = 0
    model: str | None = None
    """The model this conversation chose with `/model` (None: the agent's default)."""


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """What `/status` shows: the stored session (None before the first turn) and the lane."""

    key: SessionKey
    entry: SessionEntry | None
    waiting: int
    running: bool


class Closed(Exception):
    """The gateway is shutting down and takes no new messages."""


@dataclass(frozen=True, slots=True)
class Damaged:
    """A stored entry that could not be read; it was moved aside, not overwritten."""

    where: str
    reason: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    entries: list[SessionEntry]
    damaged: list[Damaged] = field(default_factory=list)


class Responder(Protocol):
    """How the gateway talks back to the adapter for one inbound message.

    Every method must swallow and log its own platform errors: a failed send never
    breaks the lane of other messages.
    """

    async def send(self, reply: Reply) -> None: ...

    async def on_queued(self) -> None:
        """The message waits behind a running turn of its conversation."""
        ...

    def working(self) -> AbstractAsyncContextManager[None]:
        """Held for the whole turn that answers this message (typing indicator)."""
        ...

    async def on_delta(self, text: str) -> None:
        """A streamed piece of the answer, before the whole `answer` reply."""
        ...

    async def on_cancelled(self, reason: CancelReason) -> None:
        """The turn streaming into this responder was cancelled: whatever it showed of the
        answer will not be completed and must be marked as cut off (never left looking
        finished). A reply for the message still follows (`stopped`, `merged`, ...)."""
        ...


@dataclass(frozen=True, slots=True)
class TurnInput:
    """What an agent sees for one turn."""

    session_key: SessionKey
    session_id: str
    turn: int
    history: Sequence[ChatMessage]
    new_messages: Sequence[ChatMessage]
    model: str | None = None
    """The model this conversation chose with `/model`; None: use the agent's default."""
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    """Bytes of the attachments in `history` and `new_messages`, by sha256, as far as the
    turn's budget allows; a reference without bytes here is shown as a placeholder."""


class Agent(Protocol):
    name: str

    def stream(self, turn: TurnInput) -> AsyncIterator[str]:
        """Yield the answer in pieces; raise `AgentError` when it cannot answer."""
        ...

    async def close(self) -> None: ...


class Summarizer(Protocol):
    """Optional for an agent: what compaction asks to summarise the older part of a history."""

    async def summarize(self, records: Sequence[ChatMessage]) -> str: ...


@runtime_checkable
class HistorySource(Protocol):
    """What a responder offers when its conversation has earlier messages to read.

    The gateway calls it inside the turn lock, only on the first turn of a session, so a
    thread is read once per session however many processes share the store.
    """

    async def fetch_history(self) -> Sequence[ChatMessage]:
        """Earlier messages (oldest first, marked `backfill`), up to the adapter's limit.

        Raises nothing: a missing permission or an error is logged and gives `[]`.
        """
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Attachment bytes, content-addressed per session (stores that keep files offer it)."""

    async def put_blobs(self, session_id: str, blobs: Mapping[str, bytes]) -> None:
        """Store each blob under its sha256 (idempotent); durable before it returns."""
        ...

    async def get_blobs(self, session_id: str, digests: Sequence[str]) -> dict[str, bytes]:
        """The blobs found (missing or pruned ones are left out)."""
        ...

    async def prune_session(self, session_id: str) -> None:
        """Forget a session's transcript and every blob of it."""
        ...


@dataclass(slots=True)
class TurnLease:
    """A held turn lock of `key`. `token` is its fencing token: it grows with every
    acquisition of that key's lock, so a commit can be refused when a newer holder exists.

    `committing` is set by the store while the turn's commit is under way: from then on a
    lost lease no longer cancels the turn (the fence decides, and a commit that reached
    the store must be answered, not retried)."""

    key: SessionKey
    token: int
    committing: bool = False


@dataclass(frozen=True, slots=True)
class TurnCommit:
    """Everything a turn stores, written by `SessionStore.commit` whole or not at all."""

    lease: TurnLease
    session_id: str
    commit_id: str
    """Unique per attempt: a commit retried after a dropped connection is stored once."""
    records: Sequence[ChatMessage]
    at: float
    turns: int
    """The session's turn count once this commit is stored (unchanged for a commit that
    only keeps an interrupted message)."""


class Fenced(Exception):
    """A commit was refused, or the turn lock was lost: a newer holder of the key's turn
    lock exists, or the key now maps to another session. Nothing of the turn was stored."""


class AgentError(Exception):
    """The agent could not answer; the message is for the log, never for the user."""


class StoreError(Exception):
    """The store could not complete an operation; nothing was reported as done."""


Admission = Literal["allowed", "limited_first", "limited"]
"""`count_message`: counted and allowed; over a limit and the first such message of its
window (tell the sender); over a limit again (say nothing)."""


@dataclass(frozen=True, slots=True)
class RequestClaim:
    """`claim_request`: `new` when this caller owns the request; else what the owner stored:
    its `fingerprint` and, once it finished, its `answer` (None while it still runs)."""

    new: bool
    fingerprint: str = ""
    answer: bytes | None = None


Minter = Callable[[SessionKey], SessionEntry]
FreshCheck = Callable[[SessionEntry], bool]


class SessionStore(Protocol):
    """Sessions, transcripts and turn locks.

    Guarantees every backend gives:
      * `reserve` is atomic across every process using the store: callers racing on a
        key whose entry is missing or stale adopt one minted entry.
      * `lock_turn` excludes turns of one key across every process using the store and
        hands out a `TurnLease` whose fencing token grows with every acquisition.
      * `commit` is a turn's only write: its records and the entry's progress (turn
        count, last interaction) are stored whole or not at all; it is fenced (refused
        with `Fenced`, nothing written, unless the lease's token is still the key's
        current one and the key still maps to the commit's session id) and idempotent
        (a retried commit id is stored once).
      * An entry's `turns` and `last_interaction_at` are those of its last commit.
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

    async def delete(self, key: SessionKey, session_id: str) -> bool:
        """Remove the key's entry and that session's transcript, only if the key still
        maps to `session_id` (a compare-and-delete: never a session minted meanwhile).
        True if it was removed."""
        ...

    async def commit(self, commit: TurnCommit) -> None:
        """Store a turn durably, whole or not at all; `Fenced` if refused, `StoreError` if
        the store failed (and nothing was stored)."""
        ...

    async def tail(self, session_id: str, n: int) -> builtins.list[ChatMessage]: ...

    def lock_turn(self, key: SessionKey) -> AbstractAsyncContextManager[TurnLease]:
        """Exclude other turns of `key`; raises `Fenced` out of the block if the lock is lost."""
        ...

    async def mark_delivered(self, ids: Sequence[str], window_s: float) -> int:
        """Remember every id for `window_s`, in one atomic step shared by every process on
        the store. 0 when none was remembered before (a first delivery), else the 1-based
        index of the first that was (a duplicate)."""
        ...

    async def claim_request(self, request_id: str, fingerprint: str, window_s: float) -> RequestClaim:
        """Own `request_id` for `window_s` if nobody does (atomic across processes)."""
        ...

    async def finish_request(self, request_id: str, fingerprint: str, answer: bytes, window_s: float) -> None:
        """Store the owner's answer; later claims get it until `window_s` has passed."""
        ...

    async def release_request(self, request_id: str) -> None:
        """Forget an owned request that stored nothing, so a retry may run it."""
        ...

    async def count_message(self, sender: str, per_minute: int, per_day: int) -> Admission:
        """Count one message of `sender` against fixed windows that start at its first
        message (0 = no limit), atomically across processes. A limited message is not
        counted, so it never uses up budget."""
        ...

    async def request_stop(self, key: SessionKey) -> None:
        """Ask whichever process runs a turn of `key` to stop it (`/stop` across processes):
        advances the key's stop counter, which `stop_requests` reads."""
        ...

    async def stop_requests(self, key: SessionKey) -> int:
        """How many stops were ever requested for `key` (0 if none); cheap, polled during turns."""
        ...

    async def close(self) -> None: ...
