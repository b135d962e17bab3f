"""`list_page` on every backend: pages cover every entry once, a filter keeps what it
accepts, and a page reads at most its budget (the console's list relies on all three)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.model import SessionEntry, SessionKey
from core.model.messages import ChatMessage
from core.store.base import SessionStore
from tests.core.store.contract import OpenStore, always, mint_at
from tests.core.store.turns import store_turn

N = 90


@pytest.fixture
async def store(open_store: OpenStore) -> SessionStore:
    return await open_store()


def key(i: int) -> SessionKey:
    return SessionKey(f"agent:main:test:user-{i}:{'even' if i % 2 == 0 else 'odd'}")


async def pages(
    backend: SessionStore, limit: int, keep: Callable[[SessionEntry], bool] | None = None, budget: int = 5000
) -> list[list[str]]:
    out: list[list[str]] = []
    after = ""
    while True:
        page = await backend.list_page(after, limit, keep, budget)
        assert page.scanned <= budget
        out.append([e.key for e in page.entries])
        if not page.next:
            return out
        assert len(out) < 1000, "paging does not end"
        after = page.next


async def test_pages_cover_every_entry_once(store: SessionStore) -> None:
    for i in range(N):
        await store.reserve(key(i), always, mint_at(1.0))
    await store_turn(store, key(7), [ChatMessage("user", "hi", 2.0), ChatMessage("assistant", "yo", 3.0)])
    got = await pages(store, 20)
    flat = [k for page in got for k in page]
    assert sorted(flat) == sorted(key(i) for i in range(N))
    assert len(got) >= N // 25  # really paged (Redis SCAN pages may run a little over)
    first = (await store.list_page("", 1000)).entries
    assert next(e for e in first if e.key == key(7)).turns == 1  # as its last commit left it


async def test_a_filter_keeps_what_it_accepts_within_the_budget(store: SessionStore) -> None:
    for i in range(N):
        await store.reserve(key(i), always, mint_at(1.0))

    def odd(e: SessionEntry) -> bool:
        return e.key.endswith(":odd")

    flat = [k for page in await pages(store, 10, odd) for k in page]
    assert sorted(flat) == sorted(key(i) for i in range(N) if i % 2)
    small = await store.list_page("", 1000, odd, budget=30)
    assert small.scanned <= 30 + 30 and small.next  # stops early; a cursor to go on (Redis: a batch over)
