"""`[[schedules]]`: when each schedule is due, and the owned task that fires them once
across every process on the store.

Slots are computed in the schedule's timezone (cron with `croniter`), ids in UTC
(`fire_id`): the same slot has the same id in every process. A wall-clock time that
repeats when the clocks go back fires once (the second one is skipped), a time the
clocks skip is fired by croniter at the next valid minute.

Each tick, for each schedule: read its mark (every slot at or before it was handled),
then claim each slot after it that is due. A claim is atomic in the store, so of any
number of processes one fires a slot; a slot later than `catch_up` (all processes were
down) is claimed as `missed` instead, logged once, never fired. The mark advances over
the slots that are done, in order, so a restart neither fires a past slot again nor
skips one still within `catch_up`, and a stepped clock cannot fire a slot twice.

The loop sleeps until the next due time, at most `poll_s` (to notice other processes'
lapsed claims and schedules saved at runtime); idle, it costs one store read per
schedule per `poll_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from core.config import SchedulerSettings, ScheduleSettings
from core.model import FireClaim, FireMark, StoreError, fire_id
from core.ops.metrics import Metrics
from core.ops.tasks import TaskSet

log = logging.getLogger("chatlane.schedules")

GRACE_S = 30.0
"""A slot this late is still fired whatever `catch_up` says (a busy process, a slow tick)."""
MAX_SLOTS_PER_TICK = 100
"""Slots looked at per schedule and tick; a backlog beyond it is worked off over ticks."""


class FireLedger(Protocol):
    """The store's `Fires` part, as the scheduler uses it (core.store.base.Fires)."""

    async def claim_fire(self, schedule: str, due: float, token: str, lease_s: float) -> FireClaim: ...
    async def renew_fire(self, schedule: str, due: float, token: str, lease_s: float) -> bool: ...
    async def finish_fire(self, schedule: str, due: float, token: str, outcome: str) -> None: ...
    async def fire_mark(self, schedule: str) -> FireMark | None: ...
    async def advance_fire_mark(self, schedule: str, mark: FireMark) -> FireMark: ...
    async def saved_schedules(self) -> dict[str, bytes]: ...
    async def drop_schedule(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Fire:
    """One slot of one schedule, claimed by this process."""

    schedule: ScheduleSettings
    due: float
    id: str
    takeover: bool
    """An earlier owner's claim lapsed: its answer may be stored already."""


Firer = Callable[[Fire], Awaitable[str | None]]
"""Runs a fire; its outcome (`answered`, `failed`, ...), or None when nothing was stored
(shutdown): the claim is then left to lapse and another process fires it."""


def at_time(schedule: ScheduleSettings) -> float:
    when = datetime.fromisoformat(schedule.at)
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(schedule.timezone))
    return when.timestamp()


def next_slot(schedule: ScheduleSettings, after: float) -> float | None:
    """The first slot strictly after `after` (UTC seconds); None when there is none."""
    if schedule.at:
        due = at_time(schedule)
        return due if due > after else None
    if schedule.every:
        step = schedule.interval_s
        return (math.floor(after / step) + 1) * step
    from croniter import croniter  # imported on first use: most processes have no cron schedule

    tz = ZoneInfo(schedule.timezone)
    it = croniter(schedule.cron, datetime.fromtimestamp(after, tz))
    while True:
        when: datetime = it.get_next(datetime)
        if not _repeated_wall_time(when):
            return when.timestamp()


def prev_slot(schedule: ScheduleSettings, before: float) -> float | None:
    """The last slot strictly before `before`; None when there is none."""
    if schedule.at:
        due = at_time(schedule)
        return due if due < before else None
    if schedule.every:
        step = schedule.interval_s
        return (math.ceil(before / step) - 1) * step
    from croniter import croniter

    tz = ZoneInfo(schedule.timezone)
    it = croniter(schedule.cron, datetime.fromtimestamp(before, tz))
    while True:
        when: datetime = it.get_prev(datetime)
        if not _repeated_wall_time(when):
            return when.timestamp()


def _repeated_wall_time(when: datetime) -> bool:
    """The second occurrence of a wall-clock time the clocks went back over (DST ends)."""
    return when.fold == 1 and when.replace(fold=0).utcoffset() != when.utcoffset()


def slots_between(schedule: ScheduleSettings, after: float, until: float, limit: int) -> list[float]:
    """Slots in (after, until], oldest first, at most `limit`."""
    found: list[float] = []
    due = next_slot(schedule, after)
    while due is not None and due <= until and len(found) < limit:
        found.append(due)
        due = next_slot(schedule, due)
    return found


def parse_saved(raw: bytes) -> ScheduleSettings | None:
    try:
        return ScheduleSettings.model_validate_json(raw)
    except ValidationError as exc:
        log.error("a schedule saved in the store is invalid; ignored: %s", exc.errors()[0]["msg"])
        return None


class Scheduler:
    """The owned task that fires `[[schedules]]` and schedules saved in the store."""

    def __init__(
        self,
        schedules: Sequence[ScheduleSettings],
        ledger: FireLedger,
        fire: Firer,
        settings: SchedulerSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.schedules = list(schedules)
        self.ledger = ledger
        self.fire = fire
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._tasks = TaskSet("schedules")
        self._running: set[str] = set()
        """Fire ids running here (a tick never claims them again meanwhile)."""
        self._wake = asyncio.Event()
        self._main: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._main is None:
            self._main = self._tasks.spawn(self._loop(), name="scheduler")

    def wake(self) -> None:
        """Look again now (a schedule was saved here)."""
        self._wake.set()

    async def close(self) -> None:
        """Stop; fires still running are cancelled and their claims lapse (another process
        or the next start fires them, after checking what was stored)."""
        await self._tasks.close()
        self._main = None

    async def _loop(self) -> None:
        while True:
            try:
                due = await self.tick()
            except StoreError as exc:
                log.warning("schedules: the store failed (%s); trying again", exc)
                due = self.clock() + self.settings.poll_s
            delay = min(max(due - self.clock(), 0.01), self.settings.poll_s)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def all_schedules(self) -> list[ScheduleSettings]:
        saved = [s for raw in (await self.ledger.saved_schedules()).values() if (s := parse_saved(raw))]
        return [*self.schedules, *saved]

    async def tick(self) -> float:
        """Claim and start every due slot; the time of the next one."""
        schedules = await self.all_schedules()
        saved = {s.name for s in schedules[len(self.schedules) :]}
        soonest = self.clock() + self.settings.poll_s
        for schedule in schedules:
            soonest = min(soonest, await self._tick_one(schedule, schedule.name in saved))
        return soonest

    async def _tick_one(self, schedule: ScheduleSettings, saved: bool) -> float:
        now = self.clock()
        name = schedule.name
        mark = await self.ledger.fire_mark(name)
        if mark is None:
            # First sight: a repeating schedule starts now; a one-shot may be due already.
            start = 0.0 if schedule.at else now
            mark = await self.ledger.advance_fire_mark(name, FireMark(start, outcome="", at=now))
        late_limit = now - max(schedule.catch_up_s, GRACE_S)
        first = next_slot(schedule, mark.due)
        if first is not None and first < late_limit:
            mark = await self._skip(schedule, first, late_limit, now) or mark
        handled = mark
        contiguous = True
        for due in slots_between(schedule, mark.due, now, MAX_SLOTS_PER_TICK):
            ident = fire_id(name, due)
            if ident in self._running or due < late_limit:  # too late: `_skip` passes it next tick
                contiguous = False
                continue
            token = uuid.uuid4().hex
            claim = await self.ledger.claim_fire(name, due, token, self.settings.lease_s)
            if claim.state == "mine":
                self._running.add(ident)
                fire = Fire(schedule, due, ident, claim.takeover)
                self._tasks.spawn(self._run(fire, token), name=f"fire {ident}")
                contiguous = False
            elif claim.state == "taken":
                contiguous = False
            elif contiguous:
                handled = FireMark(due, ident, claim.outcome, now)
        if handled.due > mark.due:
            mark = await self.ledger.advance_fire_mark(name, handled)
        upcoming = next_slot(schedule, max(mark.due, now))
        if upcoming is None and saved and contiguous and (schedule.at and mark.due >= at_time(schedule)):
            await self.ledger.drop_schedule(name)  # a one-shot made at runtime, done
        return upcoming if upcoming is not None else math.inf

    async def _skip(
        self, schedule: ScheduleSettings, first: float, before: float, now: float
    ) -> FireMark | None:
        """Slots from `first` to the last before `before` are too late: claimed as missed
        (by one process: it logs them) and passed over."""
        name = schedule.name
        last = prev_slot(schedule, before)
        if last is None or last < first:
            return None
        token = uuid.uuid4().hex
        claim = await self.ledger.claim_fire(name, first, token, self.settings.lease_s)
        if claim.state == "done":  # fired in time by a process that had no chance to mark it
            return await self.ledger.advance_fire_mark(
                name, FireMark(first, fire_id(name, first), claim.outcome, now)
            )
        if claim.state != "mine":
            return None
        ident = fire_id(name, last)
        log.warning(
            "schedule %s: missed the fires from %s to %s (later than catch_up = %s); skipped",
            name,
            fire_id(name, first),
            ident,
            schedule.catch_up,
        )
        self.metrics.schedule_misses.labels(name).inc()
        await self.ledger.finish_fire(name, first, token, "missed")
        return await self.ledger.advance_fire_mark(name, FireMark(last, ident, "missed", now))

    async def _run(self, fire: Fire, token: str) -> None:
        name = fire.schedule.name
        renewing = self._tasks.spawn(self._renew(fire, token), name=f"renew {fire.id}")
        started = time.perf_counter()
        outcome: str | None = None
        try:
            outcome = await self.fire(fire)
        except Exception:
            log.exception("schedule %s: fire %s failed", name, fire.id)
            outcome = "failed"
        finally:
            renewing.cancel()
            self._running.discard(fire.id)
        if outcome is None:
            log.info("schedule %s: fire %s not done here (stopping); left to another process", name, fire.id)
            return
        try:
            await self.ledger.finish_fire(name, fire.due, token, outcome)
        except StoreError as exc:
            log.error("schedule %s: fire %s done (%s) but not recorded: %s", name, fire.id, outcome, exc)
        self.metrics.schedule_fires.labels(name, outcome).inc()
        late_ms = round((self.clock() - fire.due) * 1000)
        log.info(
            "fire schedule=%s id=%s key=%s mode=%s outcome=%s late_ms=%d took_ms=%d%s",
            name,
            fire.id,
            fire.schedule.key,
            fire.schedule.mode,
            outcome,
            late_ms,
            round((time.perf_counter() - started) * 1000),
            " takeover" if fire.takeover else "",
        )
        self.wake()  # the mark may advance now

    async def _renew(self, fire: Fire, token: str) -> None:
        lease = self.settings.lease_s
        name = fire.schedule.name
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not await self.ledger.renew_fire(name, fire.due, token, lease):
                    log.warning("schedule %s: lost the claim of %s while firing it", name, fire.id)
                    return
            except StoreError as exc:
                log.warning("schedule %s: cannot renew the claim of %s: %s", name, fire.id, exc)


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
