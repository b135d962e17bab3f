"""The embedded file store: layout, permissions, corruption handling, many processes, kill -9."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bots.testing import eventually
from core.conversation.reserver import Reserver
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.store.files.store import FileStore
from tests.core.store.turns import store_turn

KEY = SessionKey("agent:main:test:alice:general")


async def test_entry_file_name_is_a_hash_and_the_key_lives_inside(store: FileStore) -> None:
    entry, created = await Reserver(store).resolve(KEY)
    path = store.layout.entry_path(KEY)
    assert created and path.exists()
    assert KEY not in str(path) and "alice" not in str(path)
    assert json.loads(path.read_text())["key"] == KEY
    assert json.loads(path.read_text())["sessionId"] == entry.session_id


async def test_files_are_0600_and_dirs_0700(store: FileStore) -> None:
    entry = await store_turn(store, KEY, [ChatMessage("user", "hi", 1.0)])
    await store.request_stop(KEY)
    made = list(store.root.rglob("*"))
    expected = {
        store.layout.entry_path(KEY),
        store.layout.transcript_path(entry.session_id),
        Path(store.layout.lock_file(KEY, "turn")),
        Path(store.layout.lock_file(KEY, "stop")),
    }
    assert expected <= {p for p in made if p.is_file()}  # the loop below checks them all
    for path in [store.root, *made]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


async def test_a_session_id_that_is_not_hex_never_becomes_a_path(store: FileStore) -> None:
    with pytest.raises(ValueError, match="malformed session id"):
        store.layout.transcript_path("../../etc/passwd")


@pytest.mark.parametrize(
    "damage",
    [b"", b'{"key": "agent:main:te', b"\x00\xff\xfe garbage", b"[1, 2, 3]", b'{"key": 5}'],
    ids=["empty", "truncated", "binary", "wrong-type", "wrong-schema"],
)
async def test_a_damaged_entry_is_quarantined_not_silently_overwritten(
    store: FileStore, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    reserver = Reserver(store)
    await reserver.resolve(KEY)
    store.layout.entry_path(KEY).write_bytes(damage)
    with caplog.at_level(logging.ERROR, "chatlane.store"):
        _, created = await reserver.resolve(KEY)
    assert "damaged" in caplog.text
    moved = list((store.root / "quarantine").iterdir())
    assert len(moved) == 1 and moved[0].read_bytes() == damage
    assert created and store.layout.entry_path(KEY).exists()


async def test_a_truncated_entry_keeps_its_session_id(store: FileStore) -> None:
    """What can be recovered is kept: memory continues in the same session."""
    reserver = Reserver(store)
    entry, _ = await reserver.resolve(KEY)
    raw = store.layout.entry_path(KEY).read_bytes()
    store.layout.entry_path(KEY).write_bytes(raw[: raw.index(b"platform")])
    again, _ = await reserver.resolve(KEY)
    assert again.session_id == entry.session_id
    assert len(list((store.root / "quarantine").iterdir())) == 1


async def test_listing_reports_damaged_entries(store: FileStore) -> None:
    reserver = Reserver(store)
    await reserver.resolve(KEY)
    other = SessionKey("agent:main:test:bob:general")
    await reserver.resolve(other)
    store.layout.entry_path(other).write_bytes(b'{"key": "agent:main:test:bob:general", "sess')
    listing = await store.list()
    assert [e.key for e in listing.entries] == [KEY]
    assert [d.key for d in listing.damaged] == [other]


async def test_a_torn_last_transcript_line_is_skipped_and_then_closed(
    store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    entry = await store_turn(
        store, KEY, [ChatMessage("user", "one", 1.0), ChatMessage("assistant", "two", 2.0)]
    )
    sid = entry.session_id
    with store.layout.transcript_path(sid).open("ab") as f:
        f.write(b'{"commit":"c","turns":2,"records":[{"role":"user","content":"cut of')
    with caplog.at_level(logging.WARNING, "chatlane.transcript"):
        assert [m.content for m in await store.tail(sid, 10)] == ["one", "two"]
        assert (await store.get(KEY)) == entry  # the torn commit never happened
        after = await store_turn(store, KEY, [ChatMessage("user", "three", 3.0)])
    assert "torn" in caplog.text
    assert after.turns == 2
    assert [m.content for m in await store.tail(sid, 10)] == ["one", "two", "three"]


async def test_garbage_in_the_middle_of_a_transcript_is_skipped(store: FileStore) -> None:
    entry = await store_turn(store, KEY, [ChatMessage("user", "one", 1.0)])
    sid = entry.session_id
    with store.layout.transcript_path(sid).open("ab") as f:
        f.write(b"\x00\x01 not json\n")
    await store_turn(store, KEY, [ChatMessage("user", "two", 2.0)])
    assert [m.content for m in await store.tail(sid, 10)] == ["one", "two"]


async def test_tail_reads_only_the_end_of_a_long_transcript(store: FileStore) -> None:
    for i in range(2000):
        entry = await store_turn(store, KEY, [ChatMessage("user", f"m{i} " + "x" * 500, float(i))])
    last = await store.tail(entry.session_id, 3)
    assert [m.content.split()[0] for m in last] == ["m1997", "m1998", "m1999"]


async def test_turn_lock_excludes_two_tasks_of_one_process(store: FileStore) -> None:
    inside = 0
    most = 0

    async def turn() -> None:
        nonlocal inside, most
        async with store.lock_turn(KEY):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.005)
            inside -= 1

    async with asyncio.timeout(20):
        await asyncio.gather(*(turn() for _ in range(20)))
    assert most == 1


async def test_a_new_conversation_makes_one_lock_file_its_turn_lock(store: FileStore) -> None:
    await store_turn(store, KEY, [ChatMessage("user", "hi", 1.0)])
    locks = Path(store.layout.lock_file(KEY, "turn")).parent
    assert [p.name for p in locks.iterdir()] == [Path(store.layout.lock_file(KEY, "turn")).name]


async def test_an_entry_write_outside_the_turn_waits_for_the_running_turn(store: FileStore) -> None:
    reserver = Reserver(store)
    order: list[str] = []
    async with store.lock_turn(KEY):
        first, _ = await reserver.resolve(KEY)  # the holder writes at once
        other = asyncio.create_task(reserver.reset(KEY))
        await asyncio.sleep(0.1)
        assert not other.done(), "an entry was rewritten during another task's turn"
        order.append("turn ends")
    fresh = await asyncio.wait_for(other, 10)
    order.append("reset")
    assert order == ["turn ends", "reset"]
    assert fresh.session_id != first.session_id
    assert (await store.get(KEY)) == fresh


async def test_a_new_conversations_turn_reads_no_entry_back_it_just_wrote(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    found: list[str] = []
    read_stored = store.layout.read_stored

    def counted(path: Path | str, key: str | None = None) -> object:
        entry = read_stored(path, key)
        if entry is not None:
            found.append(str(path))
        return entry

    monkeypatch.setattr(store.layout, "read_stored", counted)
    entry = await store_turn(store, KEY, [ChatMessage("user", "hi", 1.0)])  # mint, fence check, commit
    assert entry.turns == 1
    assert found == [], "the minted entry was parsed again from disk"


async def test_an_entry_another_process_replaced_is_read_again(tmp_path: Path) -> None:
    here, there = FileStore(tmp_path / "state"), FileStore(tmp_path / "state")
    try:
        minted, _ = await Reserver(here).resolve(KEY)  # remembered by `here` as it wrote it
        replaced = await Reserver(there).reset(KEY)
        seen = await here.get(KEY)
        assert seen is not None and seen.session_id == replaced.session_id != minted.session_id
    finally:
        await here.close()
        await there.close()


async def test_a_state_folder_removed_while_running_is_made_again_0700_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileStore(tmp_path / "state")
    try:
        await store_turn(store, SessionKey("agent:main:test:ann:c"), [ChatMessage("user", "one", 1.0)])
        assert "was missing" not in caplog.text  # new fan-out folders alone are not reported
        shutil.rmtree(tmp_path / "state")
        with caplog.at_level(logging.WARNING, "chatlane.store"):
            entry = await store_turn(store, KEY, [ChatMessage("user", "two", 2.0)])
        assert entry.turns == 1 and "was missing; made it again" in caplog.text
        for path in [store.root, *store.root.rglob("*")]:
            if path.is_dir():
                assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    finally:
        await store.close()


async def test_a_mint_cancelled_while_its_entry_syncs_leaves_no_entry_and_no_temporary_file(
    store: FileStore,
) -> None:
    """The entry is written on the loop and only its fsync waits on a store thread: a
    cancel in that wait (an interrupt, a shutdown) must leave no half-made entry."""
    busy = threading.Event()
    for _ in range(8):  # every store thread blocked: the entry's fsync waits behind them
        store._pool.submit(busy.wait, 10)
    reserver = Reserver(store)
    minting = asyncio.create_task(reserver.resolve(KEY))
    folder = store.layout.entry_path(KEY).parent
    await eventually(lambda: folder.is_dir() and any(folder.iterdir()))  # its temporary file
    minting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await minting
    busy.set()
    await eventually(lambda: not any(folder.iterdir()))  # the temporary file is gone
    assert not store.layout.entry_path(KEY).exists()
    assert await store.get(KEY) is None
    entry, created = await reserver.resolve(KEY)  # and the conversation starts normally
    assert created and (await store.get(KEY)) == entry


WORKER = r"""
import asyncio, sys
from core.conversation import Reserver
from core.store.files import FileStore
from core.model import SessionKey

async def main(root, n, keys):
    store = FileStore(root)
    reserver = Reserver(store)
    ids = []
    for i in range(n):
        entry, created = await reserver.resolve(SessionKey(f"agent:main:test:u{i % keys}:c"))
        ids.append(f"{entry.key} {entry.session_id} {int(created)}")
    await store.close()
    print("\n".join(ids))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


@pytest.mark.slow
def test_four_processes_racing_on_ten_keys_make_exactly_ten_sessions(tmp_path: Path) -> None:
    root = str(tmp_path / "state")
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, root, "50", "10"], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    lines = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        lines += out.split("\n")
    by_key: dict[str, set[str]] = {}
    mints = 0
    for line in filter(None, lines):
        key, sid, created = line.split()
        by_key.setdefault(key, set()).add(sid)
        mints += int(created)
    assert len(by_key) == 10
    assert all(len(ids) == 1 for ids in by_key.values())
    assert mints == 10


WRITER = r"""
import asyncio, sys, time, uuid
from core.conversation import Reserver
from core.store.files import FileStore
from core.model import ChatMessage, Fenced, SessionKey, TurnCommit

async def main(root, ack_path, start):
    store = FileStore(root)
    reserver = Reserver(store)
    ack = open(ack_path, "a", buffering=1)
    i = start
    while True:
        key = SessionKey(f"agent:main:test:u{i % 7}:c")
        async with store.lock_turn(key) as lease:
            entry, _ = await reserver.resolve(key)
            try:
                await store.commit(TurnCommit(
                    lease, entry.session_id, uuid.uuid4().hex,
                    [ChatMessage("user", f"msg {i}", time.time())], time.time(), entry.turns + 1,
                ))
            except Fenced:
                pass
            else:
                ack.write(f"{key} {entry.session_id} msg {i}\n")
        if i % 5 == 0:
            fresh = await reserver.reset(key)
            ack.write(f"{key} {fresh.session_id} reset\n")
        i += 1

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.slow
async def test_kill_9_of_a_writer_never_leaves_a_torn_entry_or_loses_an_acknowledged_write(
    tmp_path: Path,
) -> None:
    """25 writers killed at random moments: every entry parses, every acknowledged
    transcript record is there, and each key's acknowledged session id survives (or a
    newer one replaced it through a reset)."""
    root = tmp_path / "state"
    ack = tmp_path / "acks"
    ack.touch()
    for round_ in range(25):
        # Each writer starts at another key (a slow start on a busy machine must not leave
        # keys unvisited) and is killed once it is writing, at a moment that varies.
        acked_before = ack.stat().st_size
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(root), str(ack), str(round_)
        )
        await eventually(functools.partial(_grew, ack, acked_before), timeout=30)
        await asyncio.sleep((round_ % 5) * 0.02)  # the kill's moment, not a synchronization
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    store = FileStore(root)
    try:
        listing = await store.list()
        assert listing.damaged == []
        assert len(listing.entries) == 7
        acked = [line.split(" ", 2) for line in ack.read_text().splitlines() if line.count(" ") >= 2]
        assert len(acked) > 25
        history: dict[str, list[str]] = {}
        for key, sid, text in acked:
            if text != "reset":
                records = [m.content for m in await store.tail(sid, 100_000)]
                assert text in records, (key, sid, text)
            ids = history.setdefault(key, [])
            if not ids or ids[-1] != sid:
                ids.append(sid)
        final: dict[str, str] = {e.key: e.session_id for e in listing.entries}
        for key, ids in history.items():
            # The latest acknowledged session, or a newer one minted after it.
            assert final[key] not in ids[:-1], key
        for path in root.rglob("*.tmp"):
            os.unlink(path)  # leftovers of killed writers are only ever temp files
    finally:
        await store.close()


def _grew(path: Path, size: int) -> bool:
    return path.stat().st_size > size
