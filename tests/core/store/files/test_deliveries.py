"""The file store's delivery markers and sender windows (the parts' contract on both
backends is in tests/core/store/test_deliveries.py and test_limits.py)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from core.store.files.deliveries import SWEEP_PER_CHECK, Markers, count_in_windows, without_waiting
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


async def test_a_request_claim_whose_lock_is_held_elsewhere_waits_for_it_on_a_thread(tmp_path: Path) -> None:
    """Request claims run on the loop while no lock is held elsewhere; when one is (another
    process comparing the same claim), the claim waits for it on a store thread and comes
    back with what it would have said: the loop itself never waits on a lock."""
    store = FileStore(tmp_path / "state")
    markers = Markers(tmp_path / "state" / "deliveries")
    try:
        first = await store.claim_request("req", "fp", "me", 60.0, HOUR)
        assert first.new and first.owner == "me"
        folder_lock = os.path.dirname(markers.path("r:req")) + "/.lock"
        fd = os.open(folder_lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: it conflicts like another process
        release = threading.Timer(0.5, os.close, [fd])  # a loop that waited on it would stall 0.5 s
        release.start()
        try:
            retry = asyncio.create_task(store.claim_request("req", "fp", "me", 60.0, HOUR))
            for _ in range(20):  # the loop goes on meanwhile
                await asyncio.sleep(0.01)
            assert not retry.done(), "the claim did not wait for the lock, or the loop waited with it"
        finally:
            release.join()
        again = await asyncio.wait_for(retry, 10)
        assert again.new and again.owner == "me"  # its own claim, taken again
        await store.finish_request("req", "me", "fp", b"the answer", HOUR)
        other = await store.claim_request("req", "fp", "someone else", 60.0, HOUR)
        assert not other.new and other.answer == b"the answer" and other.owner == "me"
    finally:
        await store.close()


def test_a_sweep_that_meets_a_held_lock_leaves_the_marker_for_a_later_check(tmp_path: Path) -> None:
    markers = Markers(tmp_path / "m")
    assert markers.create("old", 0.05)
    old = Path(markers.path("old"))
    time.sleep(0.2)  # its journal is two windows old now
    fd = os.open(str(old.parent / ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    release = threading.Timer(0.5, os.close, [fd])  # a sweep that waited would end, not hang
    release.start()
    try:
        assert without_waiting(markers.create, "new", 0.05)  # made; its sweep meets the lock
        assert old.exists(), "the sweep waited for the lock"
    finally:
        release.join()
    time.sleep(0.06)  # journals are looked for once per window
    markers.create("newer", 0.05)
    assert not old.exists(), "the marker was dropped from the sweep, not left for later"
