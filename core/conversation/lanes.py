"""One execution lane per session key: turns of a key run one at a time, in order.

Adapters never lock or queue; they `submit` and return. A lane holds the messages of
one key that wait for a turn and one worker task that runs them; different keys run
concurrently up to `max_concurrent_turns`. A lane is forgotten as soon as it has
nothing to do, so memory does not grow with the number of keys ever seen.

Queue modes, for a message that arrives while a turn of its key runs:
  followup   it gets its own turn after the running one (and sees it in memory);
  collect    everything that arrived meanwhile is answered in one next turn, after
             `debounce_ms` without a new message;
  interrupt  the running turn is cancelled (its partial answer is not sent; its user
             message stays in memory) and the next turn answers everything pending.
More than `cap` waiting messages: the oldest or newest is dropped and its sender told.

Shutdown (`close`, the drain): running turns get the timeout to finish; messages that
wait in the durable inbox (`Pending.item_id`) start no new turn and nobody is told
anything (the next process answers them); messages kept only in memory still run
within the timeout, or hear "send it again".

`disown` (the process's owner lease lapsed: another process may have adopted its inbox
items) drops the keys' queued inbox items and cancels their running turns, telling
nobody anything: whoever owns the items now answers them.

`stop` (the `/stop` command) cancels a key's running turn in any mode: its messages
are not answered again (they stay in memory, marked interrupted) and their senders
get a `stopped` reply; messages queued behind it still get their turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from core.config import QueueSettings
from core.model import CancelReason, Closed, Inbound, Reply, Responder, SessionKey
from core.ops import forget_cancels

TURN_CANCEL_AGAIN_S = 2.0
"""A turn still running this long after its shutdown cancel is cancelled again (the first
can be lost, see `cancel_and_wait`); long enough for a cut-off turn to keep what it made
and edit its message before a second cancel cuts that short."""

log = logging.getLogger("chatlane.lanes")

DROPPED_TEXT = (
    "Too many messages are waiting in this conversation, so this one was skipped. "
    "Please send it again once I've caught up."
)


@dataclass(slots=True)
class Pending:
    inbound: Inbound
    responder: Responder
    recorded: bool = False
    """Already in the transcript: it was cut off by an interrupt and is answered again."""
    reset: bool = False
    """A reset command: it runs in order with the messages around it, never merged."""
    model_command: bool = False
    """A `/model` command: like a reset, in order and never merged."""
    notice: bool = False
    """A proactive notice: its text is said as the bot and stored, no agent runs; in order,
    never merged."""
    fenced: int = 0
    """How many turns of this message were fenced out (stored nothing) in a row."""
    item_id: str = ""
    """Its durable inbox item (empty: kept in memory only, e.g. no `ReplyTarget` given).
    Such a message is never told "send it again" at shutdown: it stays in the inbox."""
    seq: int = 0
    """Its place in the conversation's inbox (orders adopted items among queued ones)."""
    answer_ids: tuple[str, ...] = ()
    """The platform messages its answer streams into, as stored in the inbox."""
    attempts: int = 0
    """Turns started on it before (by processes that died): a poison message is parked."""

    @property
    def exclusive(self) -> bool:
        """A command with a turn of its own: never merged, never interrupted by a message."""
        return self.reset or self.model_command or self.notice


class Retry(Exception):
    """Raised by a turn that stored nothing and must be run again: its batch goes back
    to the front of the lane."""


SHUTDOWN_TEXT = "I'm restarting and couldn't answer this one. Please send it again in a minute."
INTERRUPTED_TEXT = (
    "I'm restarting and had to stop in the middle of answering this one. Please send it again in a minute."
)

STOPPED_TEXT = "Stopped."

RunTurn = Callable[[SessionKey, list[Pending]], Coroutine[Any, Any, None]]
Settled = Callable[[SessionKey, list[Pending]], Awaitable[None]]
"""Messages that leave the lane without a turn's commit (dropped, stopped): the runner
takes them out of the durable inbox."""


async def _nothing(key: SessionKey, items: list[Pending]) -> None:
    return None


@dataclass(slots=True)
class _Lane:
    pending: deque[Pending] = field(default_factory=deque)
    arrived: asyncio.Event | None = None
    """Made by the first `collect` debounce that waits on it: an Event per lane costs
    ~0.8 KB, and thousands of conversations waiting on a slow model have a lane each."""
    worker: asyncio.Task[None] | None = None
    """Takes the lane's messages and runs their turns itself: one task per turn, not a
    task for the turn beside a worker waiting on it. Whoever cancels a turn (an
    interrupt, `stop`, `disown`, shutdown) cancels this task while `running`."""
    running: bool = False
    """A turn runs in the worker now (it is suspended inside `run_turn`)."""
    cut_off: bool = False
    """`close` ran out of time: the worker is cancelled and must not run another turn."""
    resetting: bool = False
    stopping: bool = False
    """`stop` cancelled the running turn: its messages are not answered again."""
    disowned: bool = False
    """`disown` cancelled the running turn: its inbox items are another process's now."""
    turn_has_items: bool = False
    """The running turn answers durable inbox items (what `disown` gives up)."""


class Lanes:
    def __init__(self, run_turn: RunTurn, settings: QueueSettings, settled: Settled = _nothing) -> None:
        self._run_turn = run_turn
        self._settled = settled
        self._settings = settings
        self._lanes: dict[SessionKey, _Lane] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_turns)
        self._workers: set[asyncio.Task[None]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._lanes)

    @property
    def closing(self) -> bool:
        """`close` was called: no new messages are taken."""
        return self._closing

    def waiting(self, key: SessionKey) -> tuple[int, bool]:
        """(messages waiting, whether a turn runs) for one key."""
        lane = self._lanes.get(key)
        return (0, False) if lane is None else (len(lane.pending), lane.running)

    def stop(self, key: SessionKey) -> bool:
        """Cancel the running turn of `key` (not a reset); False when none runs here."""
        lane = self._lanes.get(key)
        if lane is None or not lane.running or lane.resetting or lane.worker is None:
            return False
        lane.stopping = True
        lane.worker.cancel()
        return True

    def disown(self, keys: Iterable[SessionKey] | None = None) -> tuple[list[Pending], int]:
        """The inbox items of `keys` (None: every key) may belong to another process now:
        drop them from their lanes untold and cancel the keys' running turns (reason
        "disowned"; the turn drops its inbox items untold, see `_work`). Messages kept
        only in memory stay. Returns (the queued items dropped, turns cancelled)."""
        dropped: list[Pending] = []
        cancelled = 0
        for key in list(self._lanes) if keys is None else list(keys):
            lane = self._lanes.get(key)
            if lane is None:
                continue
            gone = [p for p in lane.pending if p.item_id]
            if gone:
                lane.pending = deque(p for p in lane.pending if not p.item_id)
                dropped += gone
            if lane.running and lane.turn_has_items and not lane.disowned and lane.worker is not None:
                lane.disowned = True
                lane.worker.cancel()
                cancelled += 1
        return dropped, cancelled

    def cancel_reason(self, key: SessionKey) -> CancelReason:
        """Why the running turn of `key` is being cancelled (asked from inside the turn)."""
        lane = self._lanes.get(key)
        if lane is not None and lane.disowned:
            return "disowned"
        if lane is not None and lane.stopping:
            return "stopped"
        return "shutdown" if self._closing else "interrupted"

    @property
    def depth(self) -> int:
        """Messages waiting for a turn, over all keys."""
        return sum(len(lane.pending) for lane in self._lanes.values())

    async def submit(self, key: SessionKey, item: Pending, *, by_seq: bool = False) -> None:
        """Queue `item` on its key's lane; returns before the turn runs. `by_seq`: an
        adopted inbox item goes before queued items the inbox holds after it."""
        if self._closing:
            raise Closed("shutting down")
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        busy = lane.running or bool(lane.pending)
        dropped: Pending | None = None
        if len(lane.pending) >= self._settings.cap:
            dropped = item if self._settings.drop == "newest" else lane.pending.popleft()
        if dropped is not item:
            at = len(lane.pending)
            if by_seq:
                later = [i for i, p in enumerate(lane.pending) if p.item_id and p.seq > item.seq]
                at = later[0] if later else at
            lane.pending.insert(at, item)
            if lane.arrived is not None:
                lane.arrived.set()
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._work(key, lane), name=f"lane {key}")
            self._workers.add(lane.worker)
            lane.worker.add_done_callback(self._workers.discard)
        interrupt = self._settings.mode == "interrupt" and not lane.resetting
        if interrupt and lane.running and dropped is not item:
            lane.worker.cancel()
        if dropped is not None:
            log.warning("queue of %s is full (cap %d); dropped a message", key, self._settings.cap)
            await self._settled(key, [dropped])
            await dropped.responder.send(Reply(DROPPED_TEXT, "dropped", key))
        if busy and dropped is not item:
            await item.responder.on_queued()

    async def _work(self, key: SessionKey, lane: _Lane) -> None:
        batch: list[Pending] = []  # the running turn's messages, until its outcome is handled
        cut = False  # shutdown cut the running turn off: `finally` tells its messages
        try:
            while lane.pending and not lane.cut_off:
                if self._closing and lane.pending[0].item_id:
                    break  # draining: what waits in the durable inbox is left there
                if self._settings.mode == "collect":
                    await self._quiet(lane)
                async with self._slots:
                    batch = self._take(lane)
                    lane.resetting = batch[0].exclusive
                    lane.turn_has_items = any(p.item_id for p in batch)
                    outcome = await self._turn(key, lane, batch)
                if isinstance(outcome, asyncio.CancelledError):
                    if lane.cut_off:  # `close` ran out of time
                        cut = True
                        raise outcome
                    if lane.disowned:
                        # Its inbox items are another process's now; memory-only ones run again.
                        lane.pending.extendleft(reversed([p for p in batch if not p.item_id]))
                    elif lane.stopping:
                        await self._settled(key, batch)
                        for p in batch:
                            await p.responder.send(Reply(STOPPED_TEXT, "stopped", key))
                    elif self._closing:
                        cut = True
                        return
                    else:
                        # Interrupted: answer its messages together with the rest (the turn
                        # marked those it already wrote to memory as recorded).
                        lane.pending.extendleft(reversed(batch))
                elif isinstance(outcome, Retry):
                    lane.pending.extendleft(reversed(batch))
                elif outcome is not None:
                    log.error("turn of %s failed", key, exc_info=outcome)
                # A stop or disown that came as the turn ended (its commit went out) ends too.
                lane.disowned = lane.stopping = False
                batch = []
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]
            # On shutdown: messages in the durable inbox stay there and are answered after
            # the restart (nothing is said); only those kept in memory alone are told.
            if batch and cut:
                told = [p for p in batch if not p.item_id]
                log.warning(
                    "shutdown: a turn of %s was cut off; %d of its messages stay in the inbox",
                    key,
                    len(batch) - len(told),
                )
                for p in told:
                    # Recorded: in memory as interrupted, so not "safe to send again" as is.
                    text = INTERRUPTED_TEXT if p.recorded else SHUTDOWN_TEXT
                    await p.responder.send(Reply(text, "failure" if p.recorded else "shutdown", key))
            if lane.pending:  # only on shutdown
                told = [p for p in lane.pending if not p.item_id]
                log.warning(
                    "shutdown: %d messages for %s stay in the inbox, %d not answered",
                    len(lane.pending) - len(told),
                    key,
                    len(told),
                )
                for p in told:
                    await p.responder.send(Reply(SHUTDOWN_TEXT, "shutdown", key))

    async def _turn(self, key: SessionKey, lane: _Lane, batch: list[Pending]) -> BaseException | None:
        """Run one turn in this (the worker's) task; its outcome: None when it ended, else
        what it raised (`CancelledError` when cancelled)."""
        lane.running = True
        outcome: BaseException | None = None
        try:
            await self._run_turn(key, batch)
        except (Exception, asyncio.CancelledError) as exc:
            outcome = exc
        finally:
            lane.running = False
        if not lane.cut_off:
            # Unless `close` cut this worker off, a cancel it took (whether the turn ended
            # on it or caught it, e.g. once its commit had gone out) was for the turn
            # alone: this worker goes on.
            forget_cancels()
        return outcome

    async def _quiet(self, lane: _Lane) -> None:
        wait = self._settings.debounce_ms / 1000
        arrived = lane.arrived = lane.arrived or asyncio.Event()
        while wait > 0:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), wait)
            except TimeoutError:
                return

    def _take(self, lane: _Lane) -> list[Pending]:
        """The next turn's messages: one, or (collect/interrupt) all up to a reset."""
        batch = [lane.pending.popleft()]
        if self._settings.mode == "followup" or batch[0].exclusive:
            return batch
        while lane.pending and not lane.pending[0].exclusive:
            batch.append(lane.pending.popleft())
        return batch

    async def close(self, timeout: float) -> None:
        """Take no more messages; let running work finish for `timeout` s, then cancel it."""
        self._closing = True
        workers = set(self._workers)
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=timeout)
        if not late:
            return
        cut = [lane for lane in self._lanes.values() if lane.worker in late]
        for lane in cut:
            lane.cut_off = True
        for task in late:
            task.cancel()
        log.warning("shutdown: cancelled %d conversations still running", len(late))
        while late:
            _, late = await asyncio.wait(late, timeout=TURN_CANCEL_AGAIN_S)
            for lane in cut:
                # A cancel that lands in a Redis write can be lost (see `cancel_and_wait`):
                # a turn still running is cancelled again, but not a worker that is
                # telling its cut-off messages.
                if lane.running and lane.worker is not None:
                    lane.worker.cancel()
