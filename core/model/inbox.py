"""What the durable inbox keeps of an accepted message: an `InboxItem`, stored before the
adapter acknowledges the message and marked done by the commit of the turn that
answers it (core/store/base.py `Inbox`).

An item is everything a process that never saw the platform event needs to answer it:
the message (`Inbound`: text, ids, the gating facts), where the answer goes
(`ReplyTarget`), its kind, and what happened to it so far (the platform messages its
answer streams into, how many turns started on it, which process owns it).

Attachments: an item keeps each file's name and announced size, never the bytes (an
accept must stay one small durable write) nor a platform URL (they expire, and some
need the bot's token). The process that accepted a message reads its files from the
live `FileSource`s it still holds; a process that resumes the item after a restart
gets `GoneFile`s, which the turn reports as one line ("could not be read again") and
answers the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.model.keys import SessionKey, validate_key
from core.model.messages import FileUnavailable, Inbound, ReplyTarget

ItemKind = Literal["message", "reset", "model", "notice"]
"""`message`: answered by a turn. `reset` (`/new`) and `model` (`/model`): commands with a
turn of their own, in order with the messages around them. `notice`: a proactive notice
(core/door/proactive.py), said verbatim as the bot and stored, no agent. A schedule's
fire is a `message` or `notice` whose `due_at` is its slot."""

KINDS: frozenset[str] = frozenset({"message", "reset", "model", "notice"})
ITEM_ID = re.compile(r"[0-9a-f]{32}")
POISON_ATTEMPTS = 3
"""Turns started on one item without it being answered (each ended by a crash) before it
is parked as a poison message."""

GONE_FILE_TEXT = "sent before a restart; it could not be read again"
_INBOUND_TEXT = ("platform", "user", "channel", "text", "message_id", "display_name", "sender", "origin")
_INBOUND_OPTIONAL = ("thread", "space", "parent_channel", "agent")
_INBOUND_FLAGS = ("is_direct", "mentioned_bot")


@dataclass(frozen=True, slots=True)
class GoneFile:
    """A file of a resumed message: its source did not survive the restart."""

    name: str
    declared_size: int | None = None

    async def fetch(self, max_bytes: int) -> bytes:
        raise FileUnavailable(GONE_FILE_TEXT)


@dataclass(frozen=True, slots=True)
class InboxItem:
    key: SessionKey
    item_id: str
    """32 hex digits, minted at accept: the append's idempotency token (a retried append
    with the same id stores once) and what a commit names to mark the item done."""
    kind: ItemKind
    inbound: Inbound
    target: ReplyTarget | None
    at: float
    """When it was accepted (epoch seconds): the age metrics and `sessions show` use it."""
    owner: str = ""
    """The process that owns it (accepted or adopted it); set by the store."""
    seq: int = 0
    """Its place in its conversation's inbox, given by the store at append (ascending)."""
    answer_ids: tuple[str, ...] = ()
    """The platform messages its answer streams into, in order, once one was posted."""
    attempts: int = 0
    """Turns started on it that did not answer it."""
    due_at: float | None = None
    """Room for scheduled items: not runnable before this time (None: at once)."""
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The stored form (the owner, seq, answer ids and attempts are kept apart by the
        backends, which change them without rewriting the item)."""
        inbound = self.inbound
        obj: dict[str, Any] = {name: getattr(inbound, name) for name in _INBOUND_TEXT}
        for name in (*_INBOUND_OPTIONAL, *_INBOUND_FLAGS):
            if value := getattr(inbound, name):
                obj[name] = value
        if inbound.roles:
            obj["roles"] = list(inbound.roles)
        if inbound.attachments:
            obj["files"] = [{"name": f.name, "size": f.declared_size} for f in inbound.attachments]
        out: dict[str, Any] = {
            "id": self.item_id,
            "key": self.key,
            "kind": self.kind,
            "at": self.at,
            "inbound": obj,
            "target": self.target.to_json() if self.target is not None else None,
        }
        if self.due_at is not None:
            out["due"] = self.due_at
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> InboxItem:
        """ValueError when `obj` is not a stored item (a corrupt record: quarantined)."""
        if not isinstance(obj, dict):
            raise ValueError("an inbox item is an object")
        item_id, key, kind, at = obj.get("id"), obj.get("key"), obj.get("kind"), obj.get("at")
        if not isinstance(item_id, str) or not ITEM_ID.fullmatch(item_id):
            raise ValueError("inbox item id must be 32 hex digits")
        if not isinstance(key, str) or kind not in KINDS or not isinstance(at, int | float):
            raise ValueError("inbox item has wrong field types")
        raw = obj.get("inbound")
        if not isinstance(raw, dict):
            raise ValueError("inbox item has no message")
        target = obj.get("target")
        due = obj.get("due")
        extra = obj.get("extra") or {}
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            raise ValueError("inbox item extra must map strings to strings")
        return cls(
            key=validate_key(key),
            item_id=item_id,
            kind=kind,
            inbound=_inbound(raw),
            target=ReplyTarget.from_json(target) if isinstance(target, dict) else None,
            at=float(at),
            due_at=float(due) if isinstance(due, int | float) else None,
            extra=extra,
        )


def _inbound(raw: dict[str, Any]) -> Inbound:
    values: dict[str, Any] = {}
    for name in _INBOUND_TEXT:
        value = raw.get(name, "")
        if not isinstance(value, str):
            raise ValueError(f"inbox message {name} must be a string")
        values[name] = value
    for name in _INBOUND_OPTIONAL:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"inbox message {name} must be a string")
        values[name] = value
    for name in _INBOUND_FLAGS:
        values[name] = raw.get(name) is True
    roles = raw.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ValueError("inbox message roles must be strings")
    files = raw.get("files") or []
    if not isinstance(files, list):
        raise ValueError("inbox message files must be a list")
    gone = tuple(
        GoneFile(str(f.get("name", "file")), f["size"] if isinstance(f.get("size"), int) else None)
        for f in files
        if isinstance(f, dict)
    )
    return Inbound(**values, roles=tuple(roles), attachments=gone)


@dataclass(frozen=True, slots=True)
class InboxView:
    """A conversation's inbox as `Inbox.items` reads it: pending items in order, parked
    ones, and how many damaged records were quarantined while reading."""

    pending: list[InboxItem]
    parked: list[InboxItem] = field(default_factory=list)
    quarantined: int = 0
