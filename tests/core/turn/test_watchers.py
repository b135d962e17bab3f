"""`TurnWatchers`: what the console's live view and turn chart are told by the runner."""

from __future__ import annotations

from core.model import SessionKey
from core.turn import TurnEvent, TurnWatchers
from core.turn.watchers import WATCH_QUEUE

KEY = SessionKey("agent:main:test:alice:general")
OTHER = SessionKey("agent:main:test:bob:general")


async def test_a_watcher_sees_its_key_only_and_a_late_one_the_answer_so_far() -> None:
    w = TurnWatchers()
    mine, theirs = w.watch(KEY), w.watch(OTHER)
    w.started(KEY)
    w.delta(KEY, "hel")
    w.delta(KEY, "lo")
    assert w.answer[KEY] == "hello" and KEY in w.running
    w.ended(KEY)
    w.finished(KEY, "answered", 0.5)
    got = [mine.events.get_nowait() for _ in range(mine.events.qsize())]
    assert got == [
        TurnEvent("start"),
        TurnEvent("delta", "hel"),
        TurnEvent("delta", "lo"),
        TurnEvent("end"),
        TurnEvent("outcome", "answered"),
    ]
    assert theirs.events.empty()
    assert KEY not in w.running and KEY not in w.answer
    assert [t.outcome for t in w.recent] == ["answered"]


async def test_a_slow_watcher_loses_its_oldest_events_never_blocks_the_turn() -> None:
    w = TurnWatchers()
    slow = w.watch(KEY)
    w.started(KEY)
    for i in range(WATCH_QUEUE + 5):
        w.delta(KEY, str(i))
    assert slow.lagged and slow.events.qsize() == WATCH_QUEUE
    assert slow.events.get_nowait() == TurnEvent("delta", "5")  # start and 0..4 dropped
    w.unwatch(KEY, slow)
    w.delta(KEY, "x")  # nobody watches: nothing kept per watcher
    assert slow.events.qsize() == WATCH_QUEUE - 1
