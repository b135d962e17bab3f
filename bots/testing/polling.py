"""`eventually`: the one way tests and benchmarks wait for something to become true."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

INTERVAL_S = 0.01


@overload
async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(check: Callable[[], T], *, timeout: float = ..., interval: float = ...) -> T: ...
async def eventually(check: Callable[[], Any], *, timeout: float = 5.0, interval: float = INTERVAL_S) -> Any:
    """Call `check` (a plain or an async function) until it returns something truthy.

    Returns that value, so a probe can hand back what it found. Raises `TimeoutError`
    (naming the check) when it is still falsy after `timeout` seconds. An exception from
    `check` ends the wait at once: a check that crashes is a failure, not "not yet".
    """
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            while True:
                result = check()
                value = await result if inspect.isawaitable(result) else result
                if value:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        if deadline.expired():
            raise TimeoutError(f"still not true after {timeout:g} s: {_name(check)}") from None
        raise  # the check's own timeout, not ours


def _name(check: Callable[..., object]) -> str:
    code = getattr(check, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return f"{getattr(check, '__qualname__', repr(check))}{where}"
