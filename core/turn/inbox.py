"""What a turn does with the durable inbox (core/store/base.py `Inbox`), for `TurnRunner`.

The items a turn answers are marked done by its commit (`TurnCommit.answered`); what
leaves a lane without such a commit (commands, drops, stops, failures) is settled here.
Each turn started on an item is counted, so a message that crashes every process that
tries it (a poison message) is parked after `POISON_ATTEMPTS` and its sender told once.
The platform message an answer streams into is stored with its item the first time the
responder names it, so a process that resumes the answer edits that same message.
"""

from __future__ import annotations

import logging

from core.conversation import Pending
from core.model import POISON_ATTEMPTS, Reply, SessionKey, StoreError
from core.store import SessionStore

log = logging.getLogger("chatlane.inbox")

POISON_TEXT = (
    "Sorry, I couldn't answer this message: each try to answer it made me fail, so I've set it "
    "aside. Your next messages will be answered as usual."
)
"""Said once to the sender of a poison message (an inbox item parked after
`POISON_ATTEMPTS` turns that ended in a crash)."""


class InboxSteps:
    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.live: set[str] = set()
        """Inbox items queued or running here (the adoption scan leaves them alone)."""

    async def settled(self, key: SessionKey, batch: list[Pending]) -> None:
        """Messages that leave their lane without a commit naming them (a command's turn,
        a drop, a stop, a failure): out of the durable inbox."""
        ids = [p.item_id for p in batch if p.item_id]
        if not ids:
            return
        try:
            await self.store.inbox.settle(key, ids)
        except StoreError as exc:
            log.error("inbox of %s: %d answered items not marked done: %s", key, len(ids), exc)
        finally:  # only now: the scan must not see them pending and not running here
            self.live.difference_update(ids)

    async def park(self, key: SessionKey, poison: list[Pending]) -> None:
        """Set poison messages aside (kept in the inbox as parked) and tell their senders."""
        ids = [p.item_id for p in poison]
        log.error(
            "inbox of %s: %d messages parked after %d failed tries: %s", key, len(ids), POISON_ATTEMPTS, ids
        )
        try:
            await self.store.inbox.settle(key, ids, park=True)
        except StoreError as exc:
            log.error("inbox of %s: poison messages not parked: %s", key, exc)
        finally:
            self.live.difference_update(ids)
        for p in poison:
            await p.responder.send(Reply(POISON_TEXT, "failure", key))

    async def count_attempt(self, key: SessionKey, batch: list[Pending]) -> None:
        """A turn starts on these items: counted in the store, so a message that crashes
        every process that tries it is parked instead of crashing them forever."""
        for p in batch:
            if p.item_id:
                try:
                    await self.store.inbox.note(key, p.item_id, attempt=True)
                except StoreError as exc:
                    log.warning("inbox of %s: attempt not counted: %s", key, exc)

    async def show(self, key: SessionKey, batch: list[Pending], piece: str) -> None:
        """Stream a piece into the last message's responder; the first time the responder
        names the platform message the answer streams into, store it with the item, so a
        process that resumes this answer edits that message instead of posting again."""
        last = batch[-1]
        await last.responder.on_delta(piece)
        if not last.item_id:
            return
        answer_id = last.responder.answer_id
        if answer_id is not None and answer_id != last.answer_id:
            last.answer_id = answer_id
            try:
                await self.store.inbox.note(key, last.item_id, answer_id=answer_id)
            except StoreError as exc:
                log.warning("inbox of %s: answer message not stored: %s", key, exc)
