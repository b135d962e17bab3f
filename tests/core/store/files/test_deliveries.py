"""The file store's delivery markers and sender windows (the parts' contract on both
backends is in tests/core/store/test_deliveries.py and test_limits.py)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from core.store.files.deliveries import SWEEP_PER_CHECK, Markers, count_in_windows
from core.store.files.store import FileStore

HOUR = 3600.0


def test_windows_start_again_after_they_end() -> None:
    verdict, state = count_in_windows({}, 1000.0, 1, 3)
    assert verdict == "allowed"
    verdict, state = count_in_windows(state, 1030.0, 1, 3)
    assert verdict == "limited_first"
    verdict, state = count_in_windows(state, 1061.0, 1, 3)  # a new minute; the day goes on
    assert verdict == "allowed"
    assert state["d"][1] == 2
    verdict, state = count_in_windows(state, 1122.0, 1, 3)
    assert verdict == "allowed"
    verdict, state = count_in_windows(state, 1183.0, 1, 3)
    assert verdict == "limited_first"  # the day is used up
    assert count_in_windows(state, 1000.0 + 86_401, 1, 3)[0] == "allowed"


async def test_files_markers_of_old_windows_are_swept_a_few_per_check(tmp_path: Path) -> None:
    """Markers two windows old are removed by later checks, at most SWEEP_PER_CHECK per check."""
    store = FileStore(tmp_path / "state")
    markers = Markers(tmp_path / "state" / "deliveries")
    old = [Path(markers.path(f"d:message:{i}")) for i in range(40)]
    try:
        for i in range(40):
            assert await store.mark_delivered([f"message:{i}"], 0.1) == 0
        assert all(p.exists() for p in old)
        await asyncio.sleep(0.25)
        await store.mark_delivered(["message:first-check"], 0.1)
        assert 40 - SWEEP_PER_CHECK <= sum(p.exists() for p in old) < 40
        for i in range(30):  # journals are looked for once per window (here 0.1 s)
            await store.mark_delivered([f"message:later-{i}"], 0.1)
            await asyncio.sleep(0.01)
        assert not any(p.exists() for p in old)
    finally:
        await store.close()


def test_an_expired_marker_is_taken_over_by_exactly_one_of_many_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    markers = Markers(tmp_path / "m")
    assert markers.create("x", 60.0)
    path = markers.path("x")
    old = time.time() - 120
    os.utime(path, (old, old))
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: Markers(tmp_path / "m").create("x", 60.0), range(16)))
    assert made.count(True) == 1


@pytest.mark.parametrize("window", [0.05])
def test_markers_read_none_once_expired(tmp_path: Path, window: float) -> None:
    markers = Markers(tmp_path / "m")
    assert markers.create("r", window, b"content")
    assert markers.read("r", window) == b"content"
    time.sleep(window * 2)
    assert markers.read("r", window) is None
