"""What a turn does with the durable inbox (core/store/base.py `Inbox`), for `TurnRunner`.

The items a turn answers are marked done by its commit (`TurnCommit.answered`); what
leaves a lane without such a commit (commands, drops, stops, failures) is settled here.
Each turn started on an item is counted, so a message that crashes every process that
tries it (a poison message) is parked after `POISON_ATTEMPTS` and its sender told once.
The platform messages an answer streams into are stored with its item as the responder
reports them (`Responder.track_answer`: right after each post, before the answer goes
on), so a process that resumes the answer rewrites those same messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from core.conversation import Pending
from core.model import POISON_ATTEMPTS, ChatMessage, Reply, SessionKey, StoreError
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
        self.lapsed: Callable[[SessionKey], object] = lambda key: None
        """Called when an answer would go on after this process's owner lease lapsed
        (the runner gives the key up)."""

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

    @staticmethod
    def recognise_kept(raw: Sequence[ChatMessage], batch: list[Pending]) -> None:
        """Mark as recorded the inbox items whose message an interrupted turn kept in
        memory before this process (or a dead one) could answer it: the `_keep_interrupted`
        commit stores the records but leaves the items pending (they are answered later),
        so a process that resumes them after a crash would store them a second time.
        Known by the inbound message id the record carries; `raw` is the session's tail."""
        todo = {p.inbound.message_id for p in batch if p.item_id and not p.recorded and p.inbound.message_id}
        if not todo:
            return
        kept = {m.message_id for m in raw if m.role == "user" and m.interrupted and m.message_id in todo}
        for p in batch:
            if p.item_id and not p.recorded and p.inbound.message_id in kept:
                p.recorded = True

    async def count_attempt(self, key: SessionKey, batch: list[Pending]) -> None:
        """A turn starts on these items: counted in the store, so a message that crashes
        every process that tries it is parked instead of crashing them forever."""
        for p in batch:
            if p.item_id:
                try:
                    await self.store.inbox.note(key, p.item_id, attempt=True)
                except StoreError as exc:
                    log.warning("inbox of %s: attempt not counted: %s", key, exc)

    def track(self, key: SessionKey, batch: list[Pending]) -> None:
        """The answer streams into the last message's responder: each time it posts (or
        deletes) a platform message, the ids of all of them are stored with the item before
        the answer goes on, so a process that resumes it after a crash rewrites exactly
        those messages instead of posting a second copy. Call before anything streams."""
        last = batch[-1]
        if not last.item_id:
            return
        # FIFO: two reports in flight (a post of the draft's, tool progress opening a
        # message) are stored in the order their lists were taken, so the newest wins.
        order = asyncio.Lock()

        async def noted(ids: tuple[str, ...]) -> None:
            async with order:
                await write(ids)

        async def write(ids: tuple[str, ...]) -> None:
            if ids == last.answer_ids:
                return
            try:
                await self.store.inbox.note(key, last.item_id, answer_ids=ids)
            except StoreError as exc:
                log.warning("inbox of %s: answer messages not stored: %s", key, exc)
                return
            last.answer_ids = ids
            log.debug("inbox item %s: answer messages %s stored", last.item_id, ",".join(ids))

        last.responder.track_answer(noted)

    async def show(self, key: SessionKey, batch: list[Pending], piece: str) -> None:
        """Stream a piece into the last message's responder; not once the owner lease may
        have lapsed (checked by clock): another process may be rewriting that message."""
        if any(p.item_id for p in batch) and not self.store.inbox.lease_held():
            self.lapsed(key)  # cancels this turn: it ends at its next await
            return
        await batch[-1].responder.on_delta(piece)
