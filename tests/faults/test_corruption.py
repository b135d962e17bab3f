"""Corruption and hostile filesystems: damaged entries and transcripts, a missing, removed,
read-only or full state directory, short writes. The bot says what is wrong, moves
damage aside instead of overwriting it, and keeps serving every other conversation."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from bots.testing import run_cli, write_config
from core.model.keys import SessionKey
from core.store.files.store import FileStore
from core.turn.runner import STORE_FAILURE_TEXT
from tests.faults.harness import ROOT, fill_disk, inspect_state, mounted, mounted_or_skipped, remount
from tests.support.http import body, serve


def key(user: str) -> SessionKey:
    return SessionKey(f"agent:main:http:{user}:api")


def chatlane(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=ROOT, timeout=timeout)


def answer(data: dict[str, object]) -> str:
    choices = data["choices"]
    assert isinstance(choices, list)
    return str(choices[0]["message"]["content"])


DAMAGE = {
    "truncated": b'{"format":1,"key":"agent:main:http:truncated:api","sessionId":"',
    "empty": b"",
    "binary": b"\x00\xff\xfe\x89PNG garbage \xc3\x28",
    "schema": b'{"key": "agent:main:http:schema:api", "sessionId": 5, "turns": "many"}',
}


async def test_damaged_entries_are_listed_quarantined_and_never_overwritten(tmp_path: Path) -> None:
    """Truncated, empty, binary and wrong-schema entry files: `sessions list` names the
    damaged keys it can still read, the next message of each is answered in a session
    again, the original bytes are kept in quarantine, and a healthy session is unharmed."""
    users = ["healthy", *DAMAGE]
    async with serve(tmp_path) as api:
        for user in users:
            status, _, _ = await api.post(body("first", user=user))
            assert status == 200
        store = api.runtime.store
        assert isinstance(store, FileStore)
        for user, damage in DAMAGE.items():
            store.layout.entry_path(key(user)).write_bytes(damage)

    listed = chatlane("sessions", "list", "--json", "--config", str(tmp_path / "chatlane.toml"))
    assert listed.returncode == 0, listed.stderr
    assert [row["key"] for row in json.loads(listed.stdout)] == [key("healthy")]
    assert f"damaged: {key('truncated')}" in listed.stderr
    assert f"damaged: {key('schema')}" in listed.stderr
    assert listed.stderr.count("damaged:") == 4 and "Traceback" not in listed.stderr

    async with serve(tmp_path) as api:
        status, data, _ = await api.post(body("second", user="healthy"))
        assert status == 200 and "turn 2 " in answer(data)
        for user in DAMAGE:
            status, data, _ = await api.post(body("after damage", user=user))
            assert status == 200, data
    quarantined = sorted(p.read_bytes() for p in (tmp_path / "state" / "quarantine").iterdir())
    assert quarantined == sorted(DAMAGE.values())
    assert inspect_state(tmp_path / "state").damaged == []


async def test_an_entry_path_that_is_a_directory_is_reported_and_does_not_hide_the_others(
    tmp_path: Path,
) -> None:
    """Regression: one unreadable entry (here a directory where the file should be) made
    `list()` fail as a whole, so `chatlane sessions list` showed nothing at all."""
    async with serve(tmp_path) as api:
        assert (await api.post(body("hi", user="ann")))[0] == 200
        store = api.runtime.store
        assert isinstance(store, FileStore)
        store.layout.entry_path(key("blocked")).mkdir(parents=True)
        listing = await store.list()
        assert [e.key for e in listing.entries] == [key("ann")]
        assert len(listing.damaged) == 1 and "unreadable" in listing.damaged[0].reason
        status, data, _ = await api.post(body("hello", user="blocked"))
        assert status == 502 and data["error"]["message"] == STORE_FAILURE_TEXT
        assert (await api.post(body("still here", user="ann")))[0] == 200


async def test_garbage_in_the_middle_of_a_transcript_is_skipped_and_memory_continues(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path) as api:
        assert (await api.post(body("remember me", user="ann")))[0] == 200
        store = api.runtime.store
        assert isinstance(store, FileStore)
        entry = await store.get(key("ann"))
        assert entry is not None
        with store.layout.transcript_path(entry.session_id).open("ab") as f:
            f.write(b'\x00\xff{"role": "user", "content": \n{"not": "a record"}\n\xc3\x28\n')
        status, data, _ = await api.post(body("and now?", user="ann"))
        assert status == 200
        assert "turn 2 " in answer(data) and "'remember me'" in answer(data)
        contents = [m.content for m in await store.tail(entry.session_id, 100)]
    assert contents[0] == "remember me" and contents[2] == "and now?"


async def test_a_missing_state_directory_is_made_with_private_permissions(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "er" / "state"
    async with serve(tmp_path, state=state) as api:
        assert (await api.post(body("hi", user="ann")))[0] == 200
    for d in (tmp_path / "deep", state, *state.rglob("*")):
        if d.is_dir():
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


async def test_removing_the_state_directory_while_running_does_not_break_known_conversations(
    tmp_path: Path,
) -> None:
    """Regression: the store remembered which folders it had made, so after the state
    directory was removed every conversation seen before failed until a restart."""
    async with serve(tmp_path) as api:
        assert (await api.post(body("one", user="ann")))[0] == 200
        shutil.rmtree(tmp_path / "state")
        status, data, _ = await api.post(body("two", user="ann"))
        assert status == 200, data
        status, data, _ = await api.post(body("three", user="ann"))
        assert status == 200 and "turn 2 " in answer(data)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    state = inspect_state(tmp_path / "state")
    assert list(state.entries) == [key("ann")]
    assert [m.content for m in state.transcripts[state.entries[key("ann")]] if m.role == "user"] == [
        "two",
        "three",
    ]


def test_an_unusable_state_path_stops_chatlane_with_one_clear_line(tmp_path: Path) -> None:
    """Regression: a state path that is a file (an injected ENOTDIR, which root cannot
    chmod its way past) ended `chatlane run` and `sessions list` in a traceback."""
    (tmp_path / "state").write_text("not a folder")
    config = str(write_config(tmp_path))
    for args in (("run",), ("sessions", "list")):
        done = chatlane(*args, "--config", config)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert f"cannot use state directory {tmp_path / 'state'}: Not a directory" in done.stderr


async def test_a_read_only_state_directory_fails_clearly_and_recovers(tmp_path: Path) -> None:
    """A real read-only bind mount (root ignores chmod): at startup, a clear one-line
    error; turning read-only while running, a plain failure reply and nothing damaged;
    writable again, the conversation goes on with its memory."""
    source, state = tmp_path / "source", tmp_path / "state"
    source.mkdir()
    with mounted_or_skipped(state, "--bind", str(source)):
        with mounted(tmp_path / "ro", "--bind", "-o", "ro", str(source)) as ro_ok:
            assert ro_ok
            done = chatlane("run", "--config", str(write_config(tmp_path, state=tmp_path / "ro" / "s")))
            assert done.returncode == 1 and "Traceback" not in done.stderr
            assert "Read-only file system" in done.stderr
        async with serve(tmp_path, state=state) as api:
            assert (await api.post(body("before", user="ann")))[0] == 200
            await remount(state, "ro")
            status, data, _ = await api.post(body("while read-only", user="ann"))
            assert status == 502 and data["error"]["message"] == STORE_FAILURE_TEXT
            status, data, _ = await api.post(body("new person", user="bob"))
            assert status == 502 and "Errno" not in json.dumps(data)
            await remount(state, "rw")
            status, data, _ = await api.post(body("after", user="ann"))
            assert status == 200 and "turn 2 " in answer(data) and "'before'" in answer(data)
        report = inspect_state(state)
        assert report.damaged == [] and report.bad_lines == 0


async def test_a_full_disk_fails_the_turn_cleanly_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    """A real 256 KiB tmpfs filled to ENOSPC. Regression: a transcript append that the
    kernel cut short was reported as stored, so the reply was sent and the message lost
    (a torn record). Now the turn fails with a plain message, no fragment is left, and
    the conversation goes on once space is free."""
    disk = tmp_path / "disk"
    with mounted_or_skipped(disk, "-t", "tmpfs", "-o", "size=256k", "tmpfs"):
        state = disk / "state"
        async with serve(tmp_path, state=state) as api:
            assert (await api.post(body("small", user="ann")))[0] == 200
            assert (await api.post(body("small", user="bob")))[0] == 200
            filler = fill_disk(disk)
            status, data, _ = await api.post(body("x" * 20_000, user="ann"))
            assert status == 502 and data["error"]["message"] == STORE_FAILURE_TEXT
            status, data, _ = await api.post(body("a new conversation", user="cy"))  # its mint fails
            assert status == 502 and data["error"]["message"] == STORE_FAILURE_TEXT
            report = inspect_state(state)
            assert report.bad_lines == 0 and report.damaged == []
            assert [p.name for p in state.rglob("*.tmp")] == []  # no half-written entry left behind
            filler.unlink()
            status, data, _ = await api.post(body("space again", user="ann"))
            assert status == 200 and "turn 2 " in answer(data)
            assert (await api.post(body("me too", user="bob")))[0] == 200
            status, data, _ = await api.post(body("again", user="cy"))
            assert status == 200 and "turn 1 " in answer(data)
        report = inspect_state(state)
        assert report.bad_lines == 0 and report.damaged == [] and len(report.entries) == 3


SHORT_WRITER = r"""
import asyncio, resource, signal, sys, time, uuid
from core.conversation import Reserver
from core.store.files import FileStore
from core.model import ChatMessage, SessionKey, StoreError, TurnCommit

async def main(root):
    store = FileStore(root)
    reserver = Reserver(store)
    key = SessionKey("agent:main:http:ann:api")
    async with store.lock_turn(key) as lease:
        entry, _ = await reserver.resolve(key)
        await store.commit(TurnCommit(lease, entry.session_id, uuid.uuid4().hex,
                                      [ChatMessage("user", "kept", 1.0)], 1.0, 1))
        size = store.layout.transcript_path(entry.session_id).stat().st_size
        # Every write past size + 40 bytes is cut short, then refused (EFBIG): a real
        # kernel error, the same short write a full disk gives. Entries are ~300 bytes.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
        for name, op in (
            ("entry write", reserver.reset(key)),
            ("new entry", reserver.resolve(SessionKey("agent:main:http:cy:api"))),
            ("commit", store.commit(TurnCommit(lease, entry.session_id, uuid.uuid4().hex,
                                               [ChatMessage("user", "y" * 500, 2.0)], 2.0, 2))),
        ):
            try:
                await op
                print(name, "stored")
            except StoreError as exc:
                print(name, "refused:", exc)
    await store.close()

asyncio.run(main(sys.argv[1]))
"""


def test_short_writes_never_replace_an_entry_or_leave_a_torn_record(tmp_path: Path) -> None:
    """Regression: both the entry writer and the transcript append ignored a short
    `os.write`, so a full disk replaced a good entry with a cut one (then quarantined
    as damaged) and dropped a record while reporting it stored."""
    root = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-c", SHORT_WRITER, str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "entry write refused: store I/O failed: File too large" in done.stdout
    assert "new entry refused: store I/O failed: File too large" in done.stdout
    assert "commit refused: store I/O failed: File too large" in done.stdout
    report = inspect_state(root)
    assert report.damaged == [] and list(report.entries) == [key("ann")]
    assert report.bad_lines == 0
    assert [m.content for m in report.transcripts[report.entries[key("ann")]]] == ["kept"]
    assert list(root.rglob("*.tmp")) == [], "a failed write leaves no temp file behind"
    assert os.listdir(root / "quarantine") == []
