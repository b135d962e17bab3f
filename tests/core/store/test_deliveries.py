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
