"""Storing turns the way the gateway does: under the turn lock, one fenced commit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from core.conversation.reserver import Reserver
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import SessionEntry, TurnCommit
from core.store.base import SessionStore


async def store_turn(
    store: SessionStore,
    key: SessionKey,
    records: Sequence[ChatMessage],
    *,
    at: float | None = None,
    count: bool = True,
) -> SessionEntry:
    """Commit `records` as one turn of `key`'s session (minted if missing); the entry after."""
    async with store.lock_turn(key) as lease:
        entry, _ = await Reserver(store).resolve(key)
        turns = entry.turns + 1 if count else entry.turns
        commit_at = time.time() if at is None else at
        await store.commit(TurnCommit(lease, entry.session_id, uuid.uuid4().hex, records, commit_at, turns))
    after = await store.get(key)
    assert after is not None
    return after
