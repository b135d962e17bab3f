"""`eventually`: waits for plain and async checks, hands back what they found, says what timed out."""

from __future__ import annotations

import asyncio

import pytest

from bots.testing import eventually


async def test_returns_the_first_truthy_value_once_the_condition_holds() -> None:
    seen: list[int] = []

    def probe() -> list[int]:
        seen.append(len(seen))
        return [n for n in seen if n >= 3]

    assert await eventually(probe) == [3]
    assert len(seen) == 4, "it stops asking once the answer is truthy"


async def test_awaits_an_async_check() -> None:
    ready = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, ready.set)

    async def probe() -> str:
        await asyncio.sleep(0)
        return "up" if ready.is_set() else ""

    assert await eventually(probe) == "up"


async def test_a_condition_that_never_holds_is_a_timeout_naming_the_check() -> None:
    def nothing_arrives() -> bool:
        return False

    with pytest.raises(TimeoutError, match=r"still not true after 0\.05 s: .*nothing_arrives"):
        await eventually(nothing_arrives, timeout=0.05)


async def test_an_exception_from_the_check_ends_the_wait_at_once() -> None:
    calls = 0

    def crashes() -> bool:
        nonlocal calls
        calls += 1
        raise KeyError("gone")

    with pytest.raises(KeyError):
        await eventually(crashes, timeout=5)
    assert calls == 1


async def test_the_checks_own_timeout_is_not_reported_as_ours() -> None:
    async def slow_probe() -> bool:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
        return True

    with pytest.raises(TimeoutError) as caught:
        await eventually(slow_probe, timeout=5)
    assert "still not true" not in str(caught.value)
