"""TaskSet: owned tasks are remembered until they end, and close() stops them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.ops.tasks import TaskSet, cancel_and_wait


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


async def test_cancel_and_wait_ends_a_task_whose_first_cancel_was_lost() -> None:
    """Python 3.11's `asyncio.wait_for` returns the result of a future that completes in
    the same loop step as the cancel, and the cancel is gone (CPython gh-86296; redis-py
    wraps every socket write in it). The loop below then runs on; one more cancel ends it."""
    written = asyncio.get_running_loop().create_future()
    rounds: list[int] = []

    async def renewal_loop() -> None:
        try:
            await asyncio.wait_for(written, 10)
        except asyncio.CancelledError:
            written.result()  # on Python 3.12+ the cancel is not lost: lose it here alike
        while True:
            rounds.append(1)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(renewal_loop())
    await asyncio.sleep(0)  # the task waits in wait_for
    written.set_result(None)
    task.cancel()  # lands in the same step as the write's completion
    async with asyncio.timeout(5):
        await cancel_and_wait({task}, again_s=0.05)
    assert task.cancelled()
    assert rounds, "the first cancel was lost: the loop ran on until cancelled again"


async def test_cancel_and_wait_cancels_a_well_behaved_task_once() -> None:
    seen: list[str] = []

    async def polite() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            await asyncio.sleep(0.2)  # cleanup shorter than again_s is not cut short
            seen.append("cleaned up")
            raise

    task = asyncio.create_task(polite())
    await asyncio.sleep(0)
    await cancel_and_wait({task}, again_s=1.0)
    assert seen == ["cancelled", "cleaned up"] and task.cancelled()
