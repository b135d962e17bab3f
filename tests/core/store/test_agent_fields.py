"""What agents add to the store, on every backend: the conversation's `/model` choice on
its entry (compare-and-set, kept by turns and, when asked, by resets; old entries without
it still load) and summary records in transcripts."""

from __future__ import annotations

from core.conversation.reserver import Reserver
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.store.entries import entry_from_json, entry_to_json, recover_entry
from tests.core.store.contract import KEY, OpenStore
from tests.core.store.turns import store_turn


async def test_a_model_choice_is_seen_by_another_store_and_kept_by_turns(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()
    entry, _ = await Reserver(one).resolve(KEY)
    chosen = await one.set_model(KEY, entry.session_id, "big")
    assert chosen is not None and chosen.model == "big"
    after = await store_turn(two, KEY, [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")])
    seen = await one.get(KEY)
    assert after.model == "big" and after.turns == 1
    assert seen is not None and seen.model == "big" and seen.session_id == entry.session_id


async def test_a_model_choice_for_a_replaced_session_is_refused(open_store: OpenStore) -> None:
    store = await open_store()
    reserver = Reserver(store)
    old, _ = await reserver.resolve(KEY)
    await reserver.reset(KEY)
    assert await store.set_model(KEY, old.session_id, "big") is None
    now = await store.get(KEY)
    assert now is not None and now.model is None


async def test_a_reset_carries_the_model_only_when_asked(open_store: OpenStore) -> None:
    store = await open_store()
    reserver = Reserver(store)
    entry, _ = await reserver.resolve(KEY)
    await store.set_model(KEY, entry.session_id, "big")
    kept = await reserver.reset(KEY, model="big")
    dropped = await reserver.reset(KEY)
    assert kept.model == "big" and dropped.model is None
    assert kept.session_id != entry.session_id


async def test_summary_records_keep_their_mark_in_transcripts(open_store: OpenStore) -> None:
    store = await open_store()
    records = [
        ChatMessage("user", "a", 1.0),
        ChatMessage("system", "you said: a", 2.0, summary=True, keeps=1),
        ChatMessage("assistant", "b", 3.0),
    ]
    entry = await store_turn(store, KEY, records)
    assert await store.tail(entry.session_id, 10) == records


def test_old_entries_without_a_model_load_and_new_ones_without_a_choice_omit_it() -> None:
    old = {
        "format": 1,
        "key": "agent:main:test:alice:general",
        "sessionId": "a" * 32,
        "platform": "test",
        "createdAt": 1.0,
        "sessionStartedAt": 1.0,
        "lastInteractionAt": 1.0,
        "updatedAt": 1.0,
        "turns": 3,
    }
    entry = entry_from_json(old)
    assert entry.model is None and entry_to_json(entry) == old
    chosen = entry_from_json(old | {"model": "big"})
    assert chosen.model == "big" and entry_to_json(chosen)["model"] == "big"


def test_a_damaged_entry_keeps_its_model_when_recovered() -> None:
    raw = b'{"key": "agent:main:test:alice:general", "sessionId": "' + b"a" * 32 + b'", "model": "big", "tur'
    recovered = recover_entry(SessionKey("agent:main:test:alice:general"), raw)
    assert recovered is not None and recovered.model == "big"
