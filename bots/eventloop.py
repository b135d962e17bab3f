"""How the CLI runs its event loop: on uvloop when it is installed (`pip install
'chatlane[fast]'`), else asyncio's own. uvloop is opt-in: it measured within noise of
asyncio here (docs/performance.md, "Tried and not kept"). `CHATLANE_LOOP=asyncio`
forces asyncio's loop, e.g. to compare the two."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when it is installed and not turned off; None for asyncio's."""
    if os.environ.get("CHATLANE_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
