"""The `Deliveries` part of the store contract (delivery marks, request claims), on every
backend. Real processes are in tests/faults/test_replicas.py."""

from __future__ import annotations

import asyncio

from tests.core.store.contract import OpenStore

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
    claims = await asyncio.gather(*(s.claim_request("r1", "fp1", HOUR) for s in [a, b] * 5))
    assert [c.new for c in claims].count(True) == 1
    waiting = await b.claim_request("r1", "fp1", HOUR)
    assert (waiting.new, waiting.fingerprint, waiting.answer) == (False, "fp1", None)
    await a.finish_request("r1", "fp1", b'{"text": "hello"}', HOUR)
    done = await b.claim_request("r1", "other", HOUR)
    assert (done.new, done.fingerprint, done.answer) == (False, "fp1", b'{"text": "hello"}')


async def test_a_released_request_can_be_owned_again(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    assert (await a.claim_request("r2", "fp", HOUR)).new
    await a.release_request("r2")
    assert (await b.claim_request("r2", "fp", HOUR)).new
