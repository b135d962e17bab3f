"""Resuming the durable inbox: what a process does with items it did not accept here.

On start, and every `queue.adopt_every_s` after, each process reads the index of
conversations with pending items (never the list of sessions), and takes over the
items whose owner is dead (its OS lock is free, or its Redis lease lapsed) and whose
platform has a running adapter here (`gateway.targets`). Each taken item joins its
conversation's lane in inbox order, before the conversation's later messages, and is
answered through a responder made from its stored `ReplyTarget`: with the `answer_ids`
stored, a cut-off streamed answer is finished in place. One log line per resumed item.

An adapter registering its platform wakes the scan at once, and the gateway holds that
platform's new messages until the scan has queued the old ones, so a conversation's
messages from before a restart are answered before those after it. An item whose
platform has no adapter here stays pending for a process that has one (logged once,
and only once the launcher said every adapter is up, `adapters_started`: before that
the adapter may just not have registered yet);
one whose sender the adapter's access rules (`targets.register(..., admits=...)`) no
longer allow is taken out unanswered (logged).

A process whose owner lease lapsed (Redis: cut off for a lease; `Inbox.lease_held`)
may have had its items adopted meanwhile: before it scans again it gives up everything
it holds (`TurnRunner.give_up`: queued items dropped, running turns cancelled, nobody
told), then takes back, like any process, only what is still its own or free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

from core.conversation import Pending
from core.door.targets import NoAdapter, Targets
from core.model import Closed, InboxItem, SessionKey, StoreError
from core.ops import Metrics, TaskSet
from core.store import SessionStore
from core.turn import TurnRunner

log = logging.getLogger("chatlane.inbox")

SCAN_KEYS_MAX = 1000
"""Conversations looked at per scan (the rest on the next): a scan stays cheap."""
HEARTBEAT_S = 1.0
"""How often the owner lease is renewed at least (Redis: `store.turn_lock_ttl_s` long),
whatever `adopt_every_s` is: a live process must never look dead to the others."""
READY_WAIT_S = 10.0
"""How long a new message waits for its platform's first scan before it is queued anyway."""


class Resumer:
    """The adoption scan of one gateway: an owned task, started by `start`."""

    def __init__(
        self, store: SessionStore, targets: Targets, runner: TurnRunner, metrics: Metrics, every_s: float
    ) -> None:
        self.store = store
        self.targets = targets
        self.runner = runner
        self.metrics = metrics
        self.every_s = every_s
        self._tasks = TaskSet("inbox")
        self._wake = asyncio.Event()
        self._ready: dict[str, asyncio.Event] = {}
        """Platform -> set once a scan finished after its adapter registered."""
        self._waiting: set[str] = set()
        """Platforms registered since the last scan started."""
        self._unanswerable: set[str] = set()
        """Items logged as having no adapter here (logged once)."""
        self._started = False
        self._adapters_up = asyncio.Event()
        """Set once every adapter of this process registered (or none is awaited)."""
        self.scans = 0
        """Scans finished (tests and `sessions` tooling wait on it)."""

    def platform_registered(self, platform: str) -> None:
        """`Targets.register` calls this: scan now, and hold the platform's new messages."""
        self._ready.setdefault(platform, asyncio.Event())
        self._waiting.add(platform)
        self._wake.set()

    async def ready(self, platform: str) -> None:
        """Wait until the platform's pending items were queued (bounded, see READY_WAIT_S)."""
        event = self._ready.get(platform)
        if event is None or event.is_set() or not self._started:
            return
        try:
            await asyncio.wait_for(event.wait(), READY_WAIT_S)
        except TimeoutError:
            log.warning(
                "inbox: resuming %s took over %ss; taking new messages anyway", platform, READY_WAIT_S
            )

    def start(self, *, await_adapters: bool = False) -> None:
        """Start the scan. `await_adapters`: the caller starts adapters after this and
        calls `adapters_started` once they are all up; until then an item of a platform
        with no adapter here is passed over quietly (its adapter may register next)."""
        if not await_adapters:
            self._adapters_up.set()
        if not self._started:
            self._started = True
            self._tasks.spawn(self._loop(), name="inbox scan")

    def adapters_started(self) -> None:
        """Every adapter registered what it answers: scan now, and from now on an item no
        adapter here can answer is one that waits for another process (logged once)."""
        if not self._adapters_up.is_set():
            self._adapters_up.set()
            self._wake.set()

    async def close(self) -> None:
        await self._tasks.close()

    async def _loop(self) -> None:
        scanned = -float("inf")
        failing = False
        while True:
            platforms, self._waiting = self._waiting, set()
            self._wake.clear()
            try:
                try:
                    await self.store.inbox.heartbeat()
                finally:  # also while the store is unreachable: the lease runs out by the clock
                    self._check_lease()
                if platforms or time.monotonic() - scanned >= self.every_s:
                    scanned = time.monotonic()
                    await self.scan()
            except StoreError as exc:
                if not failing:  # once per outage, not once a second
                    log.warning("inbox scan failed (retried until the store answers): %s", exc)
                failing = True
            except Closed:
                return
            else:
                if failing:
                    log.info("inbox scan works again")
                failing = False
            finally:
                for platform in platforms:
                    self._ready[platform].set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), min(self.every_s, HEARTBEAT_S, self.store.inbox.renew_every_s)
                )

    def _check_lease(self) -> None:
        """Give up what this process holds once its owner lease may have lapsed: another
        process may have adopted (and be answering) any of it."""
        if self.store.inbox.lease_held():
            return
        dropped, cancelled = self.runner.give_up()
        if dropped or cancelled:
            log.warning(
                "inbox: owner lease lapsed; gave up %d queued items and %d running turns "
                "(whatever no other process adopted is resumed here again)",
                dropped,
                cancelled,
            )
        self.store.inbox.forget_lapse()  # lifted only by a renewal since the lapse

    async def scan(self) -> int:
        """One pass over the index; how many items were resumed here."""
        keys = (await self.store.inbox.keys())[:SCAN_KEYS_MAX]
        resumed = depth = 0
        oldest: float | None = None
        for key in keys:
            view = await self.store.inbox.items(key)
            depth += len(view.pending)
            if view.pending:
                first = min(i.at for i in view.pending)
                oldest = first if oldest is None else min(oldest, first)
            resumed += await self._take(key, view.pending)
        self.scans += 1
        self.metrics.inbox_depth.set(depth)
        self.metrics.inbox_oldest_age.set(time.time() - oldest if oldest is not None else 0.0)
        return resumed

    async def _take(self, key: SessionKey, pending: list[InboxItem]) -> int:
        candidates: list[InboxItem] = []
        for item in pending:
            if item.item_id in self.runner.live or (item.due_at is not None and item.due_at > time.time()):
                continue
            platform = item.target.platform if item.target is not None else ""
            if not self.targets.can_answer(platform):
                if self._adapters_up.is_set() and item.item_id not in self._unanswerable:
                    self._unanswerable.add(item.item_id)
                    log.warning(
                        "inbox: item %s of %s waits for a process with a %r adapter",
                        item.item_id,
                        key,
                        platform,
                    )
                continue
            candidates.append(item)
        if not candidates:
            return 0
        taken = set(await self.store.inbox.adopt(key, [i.item_id for i in candidates]))
        count = 0
        for item in candidates:
            if item.item_id not in taken or item.item_id in self.runner.live or item.target is None:
                continue
            if not self.targets.admits(item.inbound):
                log.info(
                    "inbox: item %s of %s not answered: its sender is no longer allowed", item.item_id, key
                )
                await self.store.inbox.settle(key, [item.item_id])
                continue
            try:
                responder = self.targets.responder(replace(item.target, answer_ids=item.answer_ids))
            except NoAdapter:
                continue
            except ValueError as exc:  # a damaged target: parked, never blocks the scan
                log.error(
                    "inbox: item %s of %s parked: its reply target is unusable: %s", item.item_id, key, exc
                )
                await self.store.inbox.settle(key, [item.item_id], park=True)
                continue
            queued = Pending(
                item.inbound,
                responder,
                reset=item.kind == "reset",
                model_command=item.kind == "model",
                notice=item.kind == "notice",
                item_id=item.item_id,
                seq=item.seq,
                answer_ids=item.answer_ids,
                attempts=item.attempts,
            )
            self.runner.live.add(item.item_id)
            try:
                await self.runner.lanes.submit(key, queued, by_seq=True)
            except Closed:
                self.runner.live.discard(item.item_id)
                raise
            self.metrics.inbox_resumed.inc()
            log.info(
                "inbox: resumed item %s of %s (accepted %.1fs ago by %s, %d tries, answer messages %s)",
                item.item_id,
                key,
                time.time() - item.at,
                "this process" if item.owner == self.store.inbox.owner else f"owner {item.owner[:8]}",
                item.attempts,
                ",".join(item.answer_ids) or "-",
            )
            count += 1
        return count
