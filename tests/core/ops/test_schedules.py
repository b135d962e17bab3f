"""When schedules are due (timezones, DST) and how the scheduler fires them once: real
file stores (two stand for two processes), a clock the test moves, and a fire callback
that records what ran."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.config import SchedulerSettings, ScheduleSettings
from core.model import fire_id
from core.ops import Fire, Metrics, Scheduler, next_slot, slots_between
from core.store.files.store import FileStore

BERLIN = ZoneInfo("Europe/Berlin")
T0 = 1_800_000_000.0  # a multiple of 10 s


def every(seconds: int, catch_up: str = "1h") -> ScheduleSettings:
    return ScheduleSettings(
        name="tick", key="agent:main:http:ops:api", every=f"{seconds}s", text="hi", catch_up=catch_up
    )


def test_cron_slots_are_in_the_schedules_timezone_and_a_repeated_hour_fires_once() -> None:
    daily = ScheduleSettings(
        name="d", key="agent:main:http:o:api", cron="30 2 * * *", timezone="Europe/Berlin", text="x"
    )
    start = datetime(2026, 10, 24, 3, 0, tzinfo=BERLIN).timestamp()  # DST ends 2026-10-25 03:00 CEST
    slots = slots_between(daily, start, start + 3 * 86_400 + 3600, 10)
    local = [datetime.fromtimestamp(s, BERLIN).strftime("%m-%d %H:%M %Z") for s in slots]
    assert local == ["10-25 02:30 CEST", "10-26 02:30 CET", "10-27 02:30 CET"]
    # Ids are UTC: the same slot has the same id whatever the process's local zone.
    assert fire_id("d", slots[0]) == "d@2026-10-25T00:30:00.000Z"


def test_every_is_aligned_to_utc_and_at_fires_once() -> None:
    assert next_slot(every(10), T0) == T0 + 10
    assert next_slot(every(10), T0 + 3.5) == T0 + 10
    at = ScheduleSettings(
        name="once", key="agent:main:http:o:api", at="2026-12-24T09:00:00", timezone="Europe/Berlin", text="x"
    )
    due = datetime(2026, 12, 24, 8, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    assert next_slot(at, 0) == due
    assert next_slot(at, due) is None


class World:
    """Schedulers on one folder (processes) sharing a clock the test moves."""

    def __init__(self, tmp_path: Path) -> None:
        self.now = T0
        self.fired: list[str] = []
        self.stores: list[FileStore] = []
        self.folder = tmp_path / "state"

    async def fire(self, fire: Fire) -> str | None:
        self.fired.append(fire.id)
        return "answered"

    def scheduler(self, *schedules: ScheduleSettings) -> Scheduler:
        self.stores.append(FileStore(self.folder))
        settings = SchedulerSettings(poll_s=1, lease_s=30)
        return Scheduler(schedules, self.stores[-1], self.fire, settings, Metrics(), clock=lambda: self.now)

    async def settle(self, *schedulers: Scheduler) -> None:
        for s in schedulers:
            await s.tick()
            await s._tasks.wait(5)
            await s.tick()  # advances the mark over what just finished

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    yield w
    await w.close()


async def test_two_processes_fire_each_slot_once(world: World) -> None:
    a, b = world.scheduler(every(10)), world.scheduler(every(10))
    await world.settle(a, b)  # first sight: a repeating schedule starts now
    for step in range(1, 7):
        world.now = T0 + 10 * step + 0.2
        await world.settle(a, b)
    assert world.fired == [fire_id("tick", T0 + 10 * n) for n in range(1, 7)]


async def test_a_restart_fires_missed_slots_within_catch_up_and_never_a_past_one_again(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    a = world.scheduler(every(10, catch_up="1m"))
    await world.settle(a)
    world.now = T0 + 10.1
    await world.settle(a)
    assert world.fired == [fire_id("tick", T0 + 10)]
    # Every process down for 40 s, within catch_up: the 4 missed slots run once each.
    world.now = T0 + 50.5
    restarted = world.scheduler(every(10, catch_up="1m"))
    await world.settle(restarted)
    assert world.fired == [fire_id("tick", T0 + 10 * n) for n in range(1, 6)]
    # The clock steps back: nothing fires twice.
    world.now = T0 + 21
    await world.settle(world.scheduler(every(10, catch_up="1m")))
    assert len(world.fired) == 5
    # Down for 10 minutes: slots later than catch_up are skipped, logged once; the rest run.
    world.now = T0 + 650.5
    with caplog.at_level(logging.WARNING, "chatlane.schedules"):
        await world.settle(
            world.scheduler(every(10, catch_up="1m")), world.scheduler(every(10, catch_up="1m"))
        )
    assert [r.getMessage() for r in caplog.records if "missed" in r.getMessage()] == [
        "schedule tick: missed the fires from tick@2027-01-15T08:01:00.000Z to tick@2027-01-15T08:09:50.000Z"
        " (later than catch_up = 1m); skipped"
    ]
    assert world.fired[5:] == [fire_id("tick", T0 + 10 * n) for n in range(60, 66)]


async def test_a_one_shot_due_while_down_runs_once_within_catch_up_and_is_skipped_beyond(
    world: World,
) -> None:
    soon = datetime.fromtimestamp(T0 + 5, ZoneInfo("UTC")).isoformat()
    old = datetime.fromtimestamp(T0 - 7200, ZoneInfo("UTC")).isoformat()
    late_ok = ScheduleSettings(name="soon", key="agent:main:http:o:api", at=soon, catch_up="1h", text="x")
    too_late = ScheduleSettings(name="old", key="agent:main:http:o:api", at=old, catch_up="1h", text="x")
    world.now = T0 + 600
    a, b = world.scheduler(late_ok, too_late), world.scheduler(late_ok, too_late)
    await world.settle(a, b)
    await world.settle(a, b)
    assert world.fired == [fire_id("soon", T0 + 5)]
    mark = await world.stores[0].fire_mark("old")
    assert mark is not None and mark.outcome == "missed"
