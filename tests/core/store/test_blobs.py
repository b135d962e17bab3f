"""The `BlobStore` part of the store contract (attachment bytes), on every backend."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bots.testing.files import png
from core.conversation.reserver import new_session_id
from core.model.messages import AttachmentRef, ChatMessage
from core.store.base import BlobStore
from tests.core.store.contract import KEY, OTHER, OpenStore
from tests.core.store.turns import store_turn


def blob(data: bytes) -> dict[str, bytes]:
    return {hashlib.sha256(data).hexdigest(): data}


def ref_of(name: str, data: bytes) -> AttachmentRef:
    return AttachmentRef(name, "image/png", len(data), hashlib.sha256(data).hexdigest(), "image", 640, 480)


async def test_blobs_round_trip_and_another_process_reads_them(open_store: OpenStore) -> None:
    a, b = await open_store(), await open_store()
    assert isinstance(a, BlobStore) and isinstance(b, BlobStore)
    sid = new_session_id()
    picture = png()
    await a.put_blobs(sid, blob(picture))
    await a.put_blobs(sid, blob(picture))  # idempotent: a retried turn stores it once
    digest = hashlib.sha256(picture).hexdigest()
    assert await b.get_blobs(sid, [digest, "0" * 64]) == {digest: picture}
    assert await b.get_blobs(new_session_id(), [digest]) == {}  # per session


async def test_pruning_a_session_removes_its_transcript_and_blobs_only(open_store: OpenStore) -> None:
    store = await open_store()
    assert isinstance(store, BlobStore)
    picture = png(10, 10)
    digest = hashlib.sha256(picture).hexdigest()
    sids = []
    for key in (KEY, OTHER):
        record = ChatMessage("user", "look", 1.0, attachments=(ref_of("a.png", picture),))
        entry = await store_turn(store, key, [record])
        await store.put_blobs(entry.session_id, blob(picture))
        sids.append(entry.session_id)
    kept, pruned = sids
    await store.prune_session(pruned)
    assert await store.get_blobs(pruned, [digest]) == {}
    assert await store.tail(pruned, 10) == []
    assert await store.get_blobs(kept, [digest]) == {digest: picture}
    [record] = await store.tail(kept, 10)
    assert record.attachments == (ref_of("a.png", picture),)  # the reference survives the store


async def test_blobs_are_stored_from_files_and_checked_against_their_digest(
    open_store: OpenStore, tmp_path: Path
) -> None:
    """`put_blob_files` (how attachments are stored: streamed to a file first) on both backends."""
    a, b = await open_store(), await open_store()
    assert isinstance(a, BlobStore) and isinstance(b, BlobStore)
    sid = new_session_id()
    data = os.urandom(3 << 20)  # more than one 1 MiB copy chunk
    src = tmp_path / "upload"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    await a.put_blob_files(sid, {digest: src})
    await a.put_blob_files(sid, {digest: src})  # idempotent
    assert await b.get_blobs(sid, [digest]) == {digest: data}
    assert src.read_bytes() == data, "the file stays the caller's"
    with pytest.raises(ValueError, match="sha256"):
        await a.put_blob_files(sid, {hashlib.sha256(b"other").hexdigest(): src})
    assert len(await b.get_blobs(sid, [hashlib.sha256(b"other").hexdigest()])) == 0
