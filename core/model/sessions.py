"""What the store keeps of a conversation and the records of a turn's lease and commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from core.model.keys import SessionKey
from core.model.messages import ChatMessage


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


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing in the store's own order (not by activity): `after` of the
    next call is `next`; "" when the listing is done. `scanned` counts the entries read
    to fill it (a filter may read many to keep few)."""

    entries: list[SessionEntry]
    next: str = ""
    scanned: int = 0


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
    answered: tuple[str, ...] = ()
    """Inbox item ids this turn answered: the commit marks them done in the same atomic
    step that stores its records (answered and out of the inbox are one fact)."""


Admission = Literal["allowed", "limited_first", "limited"]
"""`count_message`: counted and allowed; over a limit and the first such message of its
window (tell the sender); over a limit again (say nothing)."""


@dataclass(frozen=True, slots=True)
class RequestClaim:
    """`claim_request`: `new` when this caller owns the request (its lease, held by
    `owner` until it lapses unless renewed); else what the owner stored: its
    `fingerprint` and, once it finished, its `answer` (None while it still runs)."""

    new: bool
    fingerprint: str = ""
    answer: bytes | None = None
    owner: str = ""
    """The lease's owner token (set when `new`): what renew, finish and release name."""


Minter = Callable[[SessionKey], SessionEntry]
FreshCheck = Callable[[SessionEntry], bool]
