"""Owned background tasks: every task is tracked until it ends, and shutdown gathers them.

One helper instead of a hand-tracked `set[asyncio.Task]` per adapter, so no task is
fire-and-forget: each one's failure is logged and shutdown waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("chatlane.tasks")


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
        late = set(self._tasks)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
