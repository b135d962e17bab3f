"""The file store's attachment bytes (the `BlobStore` contract on both backends is in
tests/core/store/test_blobs.py), and attachment references in transcripts."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from bots.testing.files import png
from core.conversation.reserver import new_session_id
from core.model.messages import AttachmentRef, ChatMessage
from core.store import jsonl
from core.store.files.store import FileStore


def blob(data: bytes) -> dict[str, bytes]:
    return {hashlib.sha256(data).hexdigest(): data}


def ref_of(name: str, data: bytes) -> AttachmentRef:
    return AttachmentRef(name, "image/png", len(data), hashlib.sha256(data).hexdigest(), "image", 640, 480)


async def test_a_blob_under_the_wrong_digest_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    try:
        with pytest.raises(ValueError, match="sha256"):
            await store.put_blobs(new_session_id(), {"0" * 64: b"not that"})
    finally:
        await store.close()


async def test_file_blobs_are_0600_in_0700_folders_with_no_temp_files_left(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    sid = new_session_id()
    try:
        await store.put_blobs(sid, blob(b"hello\n"))
    finally:
        await store.close()
    folder = tmp_path / "state" / "blobs" / sid[:2] / sid
    files = list(folder.iterdir())
    assert [f.name for f in files] == [hashlib.sha256(b"hello\n").hexdigest()]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    for d in (tmp_path / "state" / "blobs", folder.parent, folder):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


async def test_a_damaged_file_blob_is_not_handed_out_as_the_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    sid = new_session_id()
    try:
        await store.put_blobs(sid, blob(b"original"))
        digest = hashlib.sha256(b"original").hexdigest()
        (tmp_path / "state" / "blobs" / sid[:2] / sid / digest).write_bytes(b"flipped")
        assert await store.get_blobs(sid, [digest]) == {}
    finally:
        await store.close()


def test_transcript_records_keep_attachments_author_and_backfill_and_old_records_still_read() -> None:
    record = ChatMessage(
        "user", "see", 2.0, "m1", attachments=(ref_of("cat.png", png()),), author="alice", backfill=True
    )
    assert jsonl.decode_line(jsonl.encode_commit("c1", 1, 2.0, [record]))[0] == [record]
    old = b'{"role":"user","content":"hi","at":1.0,"messageId":"m0"}'
    assert jsonl.decode_line(old)[0] == [ChatMessage("user", "hi", 1.0, "m0")]
    bad_ref = b'{"role":"user","content":"hi","at":1.0,"attachments":[{"name":"x","sha256":"../../etc"}]}'
    assert jsonl.decode_line(bad_ref)[0][0].attachments == ()
