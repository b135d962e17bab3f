"""RecentSet: one event gives one turn, and memory stays bounded."""

from __future__ import annotations

from core.door.dedupe import RecentSet


def test_an_id_is_new_only_once() -> None:
    seen = RecentSet()
    assert seen.first_time("m1")
    assert not seen.first_time("m1")
    assert not seen.first_time("m1")


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    seen = RecentSet(capacity=100)
    for i in range(10_000):
        seen.first_time(str(i))
    assert len(seen) == 100
    assert not seen.first_time("9999")
    assert seen.first_time("0")
