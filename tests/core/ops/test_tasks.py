"""TaskSet: owned tasks are remembered until they end, and close() stops them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.ops.tasks import TaskSet


async def test_close_without_timeout_cancels_a_task_before_it_runs() -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("started")

    tasks = TaskSet("test")
    task = tasks.spawn(work())
    await tasks.close()
    assert task.cancelled()
    assert ran == []
    assert len(tasks) == 0


async def test_close_lets_tasks_finish_within_the_timeout_and_cancels_the_rest() -> None:
    quick_done = asyncio.Event()

    async def quick() -> None:
        await asyncio.sleep(0)
        quick_done.set()

    async def forever() -> None:
        await asyncio.Event().wait()

    tasks = TaskSet("test")
    finished, stuck = tasks.spawn(quick()), tasks.spawn(forever())
    await tasks.close(timeout=0.5)
    assert quick_done.is_set() and not finished.cancelled()
    assert stuck.cancelled()
    assert len(tasks) == 0


async def test_a_failed_task_is_logged_and_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    tasks = TaskSet("test")
    task = tasks.spawn(fail(), name="failing")
    with caplog.at_level(logging.ERROR, logger="chatlane.tasks"):
        await asyncio.wait({task})
        await asyncio.sleep(0)  # done callbacks run on the next loop step
    assert len(tasks) == 0
    assert any("test: task failing failed" in r.getMessage() for r in caplog.records)
