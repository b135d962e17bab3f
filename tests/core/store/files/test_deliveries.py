"""The store's delivery memory, request claims and per-sender counters, on both backends.

"Several stores" stand for several processes, as in test_contract.py: two `FileStore`s
on one folder, or two `RedisStore`s on one Redis. Real processes are in
tests/faults/test_replicas.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from core.store.files.deliveries import SWEEP_PER_CHECK, Markers, count_in_windows
from core.store.files.store import FileStore
from tests.core.store.test_contract import OpenStore, open_store

__all__ = ["open_store"]

HOUR = 3600.0


async def test_a_delivery_is_new_once_and_a_copy_names_the_id_seen(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    assert await a.mark_delivered(["event:E1", "message:C1:1.0"], HOUR) == 0
    assert await b.mark_delivered(["event:E1", "message:C1:1.0"], HOUR) == 1  # a retry
    assert await b.mark_delivered(["event:E2", "message:C1:1.0"], HOUR) == 2  # its twin
    assert await b.mark_delivered(["event:E3", "message:C1:2.0"], HOUR) == 0  # another message


async def test_copies_racing_on_two_stores_give_exactly_one_first(open_store: OpenStore) -> None:
    """20 messages, each delivered 6 times at once (3 event ids x 2 stores): one first each."""
    stores = [await open_store(), await open_store()]
    for n in range(20):
        copies = [
            stores[i % 2].mark_delivered([f"event:{n}-{i % 3}", f"message:{n}"], HOUR) for i in range(6)
        ]
        results = await asyncio.gather(*copies)
        assert results.count(0) == 1, (n, results)


async def test_a_delivery_is_new_again_after_its_window(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.mark_delivered(["message:1"], 0.2) == 0
    assert await store.mark_delivered(["message:1"], 0.2) == 1
    await asyncio.sleep(0.35)
    assert await store.mark_delivered(["message:1"], 0.2) == 0
    assert await store.mark_delivered(["message:1"], 0.2) == 1


async def test_a_request_has_one_owner_and_retries_get_its_answer(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    owners = [f"o{i}" for i in range(10)]
    claims = await asyncio.gather(
        *(s.claim_request("r1", "fp1", o, HOUR, HOUR) for s, o in zip([a, b] * 5, owners, strict=True))
    )
    assert [c.new for c in claims].count(True) == 1
    owner = next(c.owner for c in claims if c.new)
    waiting = await b.claim_request("r1", "fp1", "late", HOUR, HOUR)
    assert (waiting.new, waiting.fingerprint, waiting.answer) == (False, "fp1", None)
    again = await b.claim_request("r1", "fp1", owner, HOUR, HOUR)
    assert again.new, "the owner's own claim, sent again, is still its own"
    await a.finish_request("r1", owner, "fp1", b'{"text": "hello"}', HOUR)
    done = await b.claim_request("r1", "other", "late", HOUR, HOUR)
    assert (done.new, done.fingerprint, done.answer) == (False, "fp1", b'{"text": "hello"}')


async def test_a_released_request_can_be_owned_again(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    assert (await a.claim_request("r2", "fp", "a", HOUR, HOUR)).new
    await a.release_request("r2", "not-the-owner")
    assert not (await b.claim_request("r2", "fp", "b", HOUR, HOUR)).new, "only the owner releases"
    await a.release_request("r2", "a")
    assert (await b.claim_request("r2", "fp", "b", HOUR, HOUR)).new


async def test_a_claim_is_a_lease_its_owner_renews_and_a_retry_takes_over_once_lapsed(
    open_store: OpenStore,
) -> None:
    """A dead owner (it stops renewing) blocks its request for one lease, not the window;
    a live one keeps it by renewing; the first answer stored stays."""
    a, b = await open_store(), await open_store()
    lease = 0.4
    assert (await a.claim_request("r3", "fp", "a", lease, HOUR)).new
    for _ in range(3):  # a live owner renews: nobody takes it over
        await asyncio.sleep(lease / 2)
        assert await a.renew_request("r3", "a", lease)
        assert not (await b.claim_request("r3", "fp", "b", lease, HOUR)).new
    other = await b.claim_request("r3", "another body", "c", lease, HOUR)
    await asyncio.sleep(lease * 1.5)  # a stops renewing (it died)
    assert not (await b.claim_request("r3", "another body", "c", lease, HOUR)).new, "not another request's"
    assert not other.new
    took = await b.claim_request("r3", "fp", "b", lease, HOUR)
    assert took.new and took.owner == "b"
    assert not await a.renew_request("r3", "a", lease), "the dead owner's lease is gone"
    await b.finish_request("r3", "b", "fp", b"from b", HOUR)
    await a.finish_request("r3", "a", "fp", b"from a", HOUR)  # late: the first answer stays
    done = await a.claim_request("r3", "fp", "d", lease, HOUR)
    assert (done.new, done.answer) == (False, b"from b")
    assert not await b.renew_request("r3", "b", lease), "an answered request needs no lease"


async def test_limits_hold_across_stores_and_tell_the_sender_once(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    verdicts = await asyncio.gather(*((a, b)[i % 2].count_message("slack:U1", 5, 0) for i in range(12)))
    assert sorted(verdicts) == ["allowed"] * 5 + ["limited"] * 6 + ["limited_first"]
    assert await a.count_message("slack:U2", 5, 0) == "allowed"  # another sender has a budget of its own


async def test_the_daily_limit_counts_only_allowed_messages(open_store: OpenStore) -> None:
    store = await open_store()
    got = [await store.count_message("http:bob", 0, 2) for _ in range(4)]
    assert got == ["allowed", "allowed", "limited_first", "limited"]


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
