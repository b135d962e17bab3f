"""The durable inbox contract (`Inbox`), against every backend: `files` and `redis`.

Two store objects on one folder / one Redis prefix stand for two processes.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from bots.testing import RedisServer, eventually, unique_prefix
from core.config import StoreSettings
from core.conversation.reserver import Reserver
from core.model import Fenced, Inbound, InboxItem, ReplyTarget, SessionKey, TurnCommit
from core.model.messages import ChatMessage
from core.store.base import SessionStore
from core.store.files import inbox as files_inbox
from core.store.files.store import FileStore
from core.store.redis.store import RedisStore
from tests.core.store.contract import KEY, OTHER, OpenStore


def item(text: str, key: SessionKey = KEY) -> InboxItem:
    inbound = Inbound("test", "alice", "general", text, f"m-{text}", display_name="Alice", roles=("r1",))
    target = ReplyTarget("test", "general", reply_to=f"m-{text}", extra=(("team", "T1"),))
    return InboxItem(key, uuid.uuid4().hex, "message", inbound, target, time.time())


async def commit_answering(store: SessionStore, key: SessionKey, ids: list[str]) -> None:
    async with store.lock_turn(key) as lease:
        entry, _ = await Reserver(store).resolve(key)
        records = [ChatMessage("user", "q", time.time()), ChatMessage("assistant", "a", time.time())]
        commit = TurnCommit(
            lease, entry.session_id, uuid.uuid4().hex, records, time.time(), entry.turns + 1, tuple(ids)
        )
        await store.commit(commit)


async def test_append_is_ordered_idempotent_and_round_trips(open_store: OpenStore) -> None:
    store = await open_store()
    a, b = item("a"), item("b")
    stored_a = await store.inbox.append(a)
    assert (await store.inbox.append(a)).seq == stored_a.seq  # a retried append stores once
    stored_b = await store.inbox.append(b)
    assert stored_b.seq > stored_a.seq
    view = await (await open_store()).inbox.items(KEY)
    assert [i.item_id for i in view.pending] == [a.item_id, b.item_id]
    got = view.pending[0]
    assert got.inbound == a.inbound and got.target == a.target and got.kind == "message"
    assert got.owner == store.inbox.owner
    assert await store.inbox.keys() == [KEY]


async def test_the_commit_that_answers_items_takes_them_out(open_store: OpenStore) -> None:
    store = await open_store()
    a, b = item("a"), item("b")
    await store.inbox.append(a)
    await store.inbox.append(b)
    await commit_answering(store, KEY, [a.item_id])
    other = await open_store()
    assert [i.item_id for i in (await other.inbox.items(KEY)).pending] == [b.item_id]
    await commit_answering(store, KEY, [b.item_id])
    assert (await other.inbox.items(KEY)).pending == []
    assert await other.inbox.keys() == []  # the index forgets a key with nothing pending


async def test_a_commit_answers_even_without_its_done_hint(tmp_path: Path) -> None:
    """Files: the transcript's commit line is the fact; the inbox's `done` line only a hint."""
    store = FileStore(tmp_path / "state")
    a = item("a")
    await store.inbox.append(a)
    await store.inbox.append(item("b"))

    async def no_hint(key: SessionKey, ids: object) -> None:
        return None  # as if the process died right after the commit's fsync

    store.inbox.answered = no_hint  # type: ignore[method-assign,assignment]
    await commit_answering(store, KEY, [a.item_id])
    await store.close()
    again = FileStore(tmp_path / "state")
    try:
        assert [i.inbound.text for i in (await again.inbox.items(KEY)).pending] == ["b"]
    finally:
        await again.close()


async def test_notes_settle_and_park(open_store: OpenStore) -> None:
    store = await open_store()
    a, b, c = item("a"), item("b"), item("c")
    for i in (a, b, c):
        await store.inbox.append(i)
    await store.inbox.note(KEY, a.item_id, attempt=True)
    await store.inbox.note(KEY, a.item_id, attempt=True, answer_ids=["bot-1"])
    await store.inbox.settle(KEY, [b.item_id])
    await store.inbox.settle(KEY, [c.item_id], park=True)
    view = await (await open_store()).inbox.items(KEY)
    assert [(i.item_id, i.attempts, i.answer_ids) for i in view.pending] == [(a.item_id, 2, ("bot-1",))]
    assert [i.item_id for i in view.parked] == [c.item_id]


async def test_every_answer_message_is_kept_in_order_and_the_last_note_wins(open_store: OpenStore) -> None:
    """An answer past a platform's message limit spans several messages: each note names all
    of them, in order, and replaces the one before (a resumed answer that needs fewer
    messages deleted some). Another process reads the last list."""
    store = await open_store()
    a, b = item("a"), item("b")
    for i in (a, b):
        await store.inbox.append(i)
    await store.inbox.note(KEY, a.item_id, answer_ids=["m1"])
    await store.inbox.note(KEY, a.item_id, answer_ids=["m1", "m2", "m3"])
    await store.inbox.note(KEY, b.item_id, answer_ids=["m7", "m8"])
    await store.inbox.note(KEY, b.item_id, answer_ids=["m7"])
    await store.inbox.note(KEY, b.item_id, attempt=True)  # no list: the list stays
    view = await (await open_store()).inbox.items(KEY)
    assert [i.answer_ids for i in view.pending] == [("m1", "m2", "m3"), ("m7",)]


async def test_a_note_on_an_answered_item_stores_nothing(open_store: OpenStore) -> None:
    store = await open_store()
    a, b = item("a"), item("b")
    for i in (a, b):
        await store.inbox.append(i)
    await commit_answering(store, KEY, [a.item_id])
    await store.inbox.note(KEY, a.item_id, answer_ids=["late"])  # a final delete's report
    view = await (await open_store()).inbox.items(KEY)
    assert [(i.item_id, i.answer_ids) for i in view.pending] == [(b.item_id, ())]


async def test_an_answer_message_noted_by_an_older_version_is_read_files(tmp_path: Path) -> None:
    """Files: an inbox line from before answers had several messages (`answer_id` alone)
    names one; a new line also names its first as `answer_id` (read by older versions)."""
    store = FileStore(tmp_path / "state")
    try:
        a = await store.inbox.append(item("a"))
        b = await store.inbox.append(item("b"))
        path = Path(store.inbox._path(KEY))
        old = b'{"answer":"%s","answer_id":"old-1"}\n' % a.item_id.encode()
        path.write_bytes(path.read_bytes() + old)  # noqa: ASYNC240 (a test's small file)
        await store.inbox.note(KEY, b.item_id, answer_ids=["n1", "n2"])
        last = json.loads(path.read_bytes().splitlines()[-1])  # noqa: ASYNC240
        assert last["answer_id"] == "n1"
        view = await store.inbox.items(KEY)
        assert [i.answer_ids for i in view.pending] == [("old-1",), ("n1", "n2")]
    finally:
        await store.close()


async def test_an_answer_message_noted_by_an_older_version_is_read_redis(redis_server: RedisServer) -> None:
    """Redis: an item whose hash holds only `a:<id>` (an older version's note) names one
    message; a new note keeps `a:<id>` as its first, for older versions."""
    settings = StoreSettings(backend="redis", url=redis_server.url, prefix=unique_prefix())
    store = RedisStore.from_settings(settings, None)
    try:
        a = await store.inbox.append(item("a"))
        b = await store.inbox.append(item("b"))
        hash_name = store.inbox.names(KEY)[0]
        await store._r.hset(hash_name, f"a:{a.item_id}", "old-1")  # type: ignore[misc]
        await store.inbox.note(KEY, b.item_id, answer_ids=["n1", "n2"])
        assert await store._r.hget(hash_name, f"a:{b.item_id}") == b"n1"  # type: ignore[misc]
        view = await store.inbox.items(KEY)
        assert [i.answer_ids for i in view.pending] == [("old-1",), ("n1", "n2")]
    finally:
        await store.close()


async def test_only_a_dead_owners_items_are_adopted(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    await first.inbox.heartbeat()
    await second.inbox.heartbeat()
    a = await first.inbox.append(item("a"))
    assert await second.inbox.adopt(KEY, [a.item_id]) == []  # its owner lives
    assert await first.inbox.adopt(KEY, [a.item_id]) == [a.item_id]  # its own
    await first.close()  # the owner is gone (a clean stop ends its lease at once)
    assert await second.inbox.adopt(KEY, [a.item_id]) == [a.item_id]
    view = await second.inbox.items(KEY)
    assert [i.owner for i in view.pending] == [second.inbox.owner]


async def test_keys_of_two_conversations(open_store: OpenStore) -> None:
    store = await open_store()
    await store.inbox.append(item("a"))
    await store.inbox.append(item("x", OTHER))
    assert sorted(await store.inbox.keys()) == sorted([KEY, OTHER])


async def test_a_damaged_record_is_quarantined_and_never_blocks(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    try:
        await store.inbox.append(item("a"))
        path = store.inbox._path(KEY)
        with open(path, "ab") as f:  # noqa: ASYNC230 - a test writing damage
            f.write(b'{"add": {"id": "nope"}}\n')
        await store.inbox.append(item("b"))
        view = await store.inbox.items(KEY)
        assert [i.inbound.text for i in view.pending] == ["a", "b"]
        assert view.quarantined == 1
        assert list((tmp_path / "state" / "quarantine").glob("inbox-*"))
        assert (await store.inbox.items(KEY)).quarantined == 0  # moved aside once
    finally:
        await store.close()


async def test_a_busy_conversations_inbox_file_is_rewritten_with_only_its_pending_items(
    tmp_path: Path,
) -> None:
    """A conversation that always has a message waiting never empties its inbox file;
    it is compacted instead, keeping what is pending (with its tries and answer messages)."""
    store = FileStore(tmp_path / "state")
    try:
        waiting = await store.inbox.append(item("always waiting"))
        await store.inbox.note(KEY, waiting.item_id, attempt=True, answer_ids=["post-9", "post-10"])
        path = store.inbox._path(KEY)
        for n in range(200):
            answered = await store.inbox.append(item(f"m{n} " + "x" * 400))
            await store.inbox.answered(KEY, [answered.item_id])
        assert os.stat(path).st_size < 2 * 64 * 1024
        other = FileStore(tmp_path / "state")
        try:
            view = await other.inbox.items(KEY)
        finally:
            await other.close()
        assert [(i.inbound.text, i.attempts, i.answer_ids) for i in view.pending] == [
            ("always waiting", 1, ("post-9", "post-10"))
        ]
    finally:
        await store.close()


async def test_a_damaged_redis_item_is_moved_aside_and_never_blocks(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    settings = StoreSettings(backend="redis", url=redis_server.url, prefix=prefix)
    store = RedisStore.from_settings(settings, None)
    try:
        a = await store.inbox.append(item("a"))
        await store.inbox.append(item("b"))
        hash_name = store.inbox.names(KEY)[0]
        await store._r.hset(hash_name, f"i:{a.item_id}", "{not json")  # type: ignore[misc]
        view = await store.inbox.items(KEY)
        assert [i.inbound.text for i in view.pending] == ["b"]
        assert view.quarantined == 1
        assert [k async for k in store._r.scan_iter(match=f"{prefix}:quarantine:inbox:*")]
        assert (await store.inbox.items(KEY)).quarantined == 0
    finally:
        await store.close()


async def test_an_emptied_inbox_file_leaves_the_index_and_is_removed_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "state")
    try:
        a = await store.inbox.append(item("a"))
        await commit_answering(store, KEY, [a.item_id])
        path = store.inbox._path(KEY)
        assert os.stat(path).st_size == 0  # kept for the conversation's next message
        assert await store.inbox.keys() == []
        monkeypatch.setattr(files_inbox, "EMPTY_KEEP_S", -1.0)
        assert await store.inbox.keys() == []
        assert not os.path.exists(path)  # noqa: ASYNC240 - a test looking at the folder
        b = await store.inbox.append(item("b"))  # a new file again
        assert [i.item_id for i in (await store.inbox.items(KEY)).pending] == [b.item_id]
    finally:
        await store.close()


async def test_a_commit_of_items_another_process_adopted_is_refused_redis(redis_server: RedisServer) -> None:
    """Redis: a process whose owner lease lapsed (no renewal for a lease) while it kept
    its turn lock has its items adopted; its late commit answering them is refused
    (`Fenced`), and the adopter's stands: one stored answer."""
    settings = StoreSettings(
        backend="redis", url=redis_server.url, prefix=unique_prefix(), turn_lock_ttl_s=1.0
    )
    first, second = RedisStore.from_settings(settings, None), RedisStore.from_settings(settings, None)
    try:
        a = await first.inbox.append(item("a"))  # renews first's lease, then nothing does
        assert first.inbox.lease_held()
        async with first.lock_turn(KEY) as lease:  # the lock's own task keeps it renewed
            entry, _ = await Reserver(first).resolve(KEY)
            await eventually(lambda: not first.inbox.lease_held(), timeout=10)  # by its clock
            await eventually(lambda: second.inbox.adopt(KEY, [a.item_id]), timeout=10)
            assert not await first.inbox.owned(KEY, [a.item_id])
            records = [ChatMessage("user", "a", time.time()), ChatMessage("assistant", "late", time.time())]
            answered = (a.item_id,)
            late = TurnCommit(lease, entry.session_id, uuid.uuid4().hex, records, time.time(), 1, answered)
            with pytest.raises(Fenced, match="disowned"):
                await first.commit(late)
        assert await second.inbox.owned(KEY, [a.item_id])
        await commit_answering(second, KEY, [a.item_id])
        stored = await second.tail(entry.session_id, 100)
        assert [r.content for r in stored if r.role == "assistant"] == ["a"]
        assert (await second.inbox.items(KEY)).pending == []
        # A renewal after the lapse finds the lease expired; once acted on, it holds again.
        await first.inbox.heartbeat()
        assert not first.inbox.lease_held()
        first.inbox.forget_lapse()
        assert first.inbox.lease_held()
    finally:
        await first.close()
        await second.close()
