"""The stored form of a session entry, shared by every backend.

An entry is a small JSON object; `entry_from_json` refuses anything that is not exactly
that (wrong types, missing fields, a malformed session id), and `recover_entry` pulls
what it can out of a damaged one so memory is not cut off.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from core.model import SessionEntry, SessionKey

SESSION_ID = re.compile(r"[0-9a-f]{32}")
"""What every session id looks like; nothing else ever becomes part of a path or a key."""
_FORMAT = 1


def entry_to_json(entry: SessionEntry) -> dict[str, Any]:
    obj = {
        "format": _FORMAT,
        "key": entry.key,
        "sessionId": entry.session_id,
        "platform": entry.platform,
        "createdAt": entry.created_at,
        "sessionStartedAt": entry.session_started_at,
        "lastInteractionAt": entry.last_interaction_at,
        "updatedAt": entry.updated_at,
        "turns": entry.turns,
    }
    if entry.model is not None:  # written only when chosen, so older readers see what they know
        obj["model"] = entry.model
    return obj


def entry_from_json(obj: Any) -> SessionEntry:
    """ValueError with the reason when `obj` is not a valid entry."""
    if not isinstance(obj, dict):
        raise ValueError("entry is not a JSON object")
    try:
        entry = SessionEntry(
            key=SessionKey(_typed(obj, "key", str)),
            session_id=_typed(obj, "sessionId", str),
            platform=_typed(obj, "platform", str),
            created_at=float(_typed(obj, "createdAt", (int, float))),
            session_started_at=float(_typed(obj, "sessionStartedAt", (int, float))),
            last_interaction_at=float(_typed(obj, "lastInteractionAt", (int, float))),
            updated_at=float(_typed(obj, "updatedAt", (int, float))),
            turns=_typed(obj, "turns", int),
            model=_typed(obj, "model", str) if obj.get("model") is not None else None,
        )
    except KeyError as exc:
        raise ValueError(f"entry lacks field {exc.args[0]!r}") from None
    if not SESSION_ID.fullmatch(entry.session_id):
        raise ValueError("entry has a malformed sessionId")
    return entry


def _typed(obj: dict[str, Any], name: str, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"entry field {name!r} has the wrong type")
    return value


_KEY_IN_RAW = re.compile(rb'"key"\s*:\s*"(agent:[A-Za-z0-9._@*:-]{1,600})"')
_ID_IN_RAW = re.compile(rb'"sessionId"\s*:\s*"([0-9a-f]{32})"')
_TURNS_IN_RAW = re.compile(rb'"turns"\s*:\s*(\d{1,9})')
_MODEL_IN_RAW = re.compile(rb'"model"\s*:\s*"([A-Za-z0-9._:/@-]{1,200})"')
_T_IN_RAW = re.compile(rb'"sessionStartedAt"\s*:\s*([0-9.]{1,20})')


log = logging.getLogger("chatlane.store")


def report_quarantine(where: str, reason: str, moved_to: str, recovered: SessionEntry | None) -> None:
    """The one log line every backend writes when it moves a damaged entry aside."""
    log.error(
        "session entry %s is damaged (%s); moved to %s; %s",
        where,
        reason,
        moved_to,
        f"recovered session {recovered.session_id}" if recovered else "nothing recoverable",
    )


def find_key(raw: bytes) -> str | None:
    m = _KEY_IN_RAW.search(raw)
    return m.group(1).decode() if m else None


def recover_entry(key: SessionKey, raw: bytes) -> SessionEntry | None:
    """What a damaged entry still tells: its session id, so memory is not cut off."""
    if find_key(raw) not in (None, key):
        return None
    sid = _ID_IN_RAW.search(raw)
    if sid is None:
        return None
    turns = _TURNS_IN_RAW.search(raw)
    model = _MODEL_IN_RAW.search(raw)
    started = _T_IN_RAW.search(raw)
    now = time.time()
    try:
        started_at = float(started.group(1)) if started else now
    except ValueError:
        started_at = now
    return SessionEntry(
        key=key,
        session_id=sid.group(1).decode(),
        platform=key.split(":")[2] if key.count(":") >= 2 else "",
        created_at=started_at,
        session_started_at=started_at,
        last_interaction_at=now,
        updated_at=now,
        turns=int(turns.group(1)) if turns else 0,
        model=model.group(1).decode() if model else None,
    )
