"""Owned background tasks: every task is tracked until it ends, and shutdown gathers them.

One helper instead of a hand-tracked `set[asyncio.Task]` per adapter, so no task is
fire-and-forget: each one's failure is logged and shutdown waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("chatlane.tasks")

CANCEL_AGAIN_S = 0.5
"""How long a cancelled task may run on before it is cancelled again (see `cancel_and_wait`)."""


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, again_s: float = CANCEL_AGAIN_S) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again any that
    still runs `again_s` later.

    One cancel is not always enough: Python 3.11's `asyncio.wait_for`, which redis-py
    wraps around every socket write, drops a cancel that arrives as the write completes
    (CPython gh-86296, fixed in 3.12). A task awaiting Redis then runs on as if never
    cancelled; a renewal loop runs forever and whoever waits for it hangs (seen: a
    shutdown and a benchmark that never ended, about 1 cancel in 25 in a repro against redis-server)."""
    running = {task for task in tasks if not task.done()}
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=again_s)


def forget_cancels() -> None:
    """Forget every cancel request the current task took (asyncio counts them): for a
    task that caught a cancel meant for one piece of its work and goes on. Left
    counted, a later lost Redis lock (`uncancel() == 0`) would read as a shutdown."""
    task = asyncio.current_task()
    while task is not None and task.uncancel() > 0:
        pass


class TaskSet:
    """Tasks started here are remembered until they finish; `close` cancels and awaits them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: task %s failed", self.name, task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float | None = None) -> None:
        """Let running tasks finish for `timeout` s (all of them when None)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def close(self, timeout: float = 0.0) -> None:
        """Wait up to `timeout` s, then cancel what is left and wait for it to end.

        With no timeout, tasks are cancelled at once: one not started yet never runs.
        """
        if timeout > 0:
            await self.wait(timeout)
        await cancel_and_wait(set(self._tasks))
