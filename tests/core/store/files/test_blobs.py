"""Attachment bytes in the store (both backends) and attachment references in transcripts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from pathlib import Path
from typing import cast

import pytest
import redis

from bots.testing import RedisServer, unique_prefix
from core.config import StoreSettings
from core.conversation.reserver import new_session_id
from core.model.messages import AttachmentRef, ChatMessage
from core.store import jsonl
from core.store.base import BlobStore
from core.store.files.store import FileStore
from core.store.redis.store import RedisStore
from tests.core.store.test_contract import KEY, OTHER, OpenStore, open_store
from tests.core.store.turns import store_turn
from tests.fakes.files import png

__all__ = ["open_store"]  # fixture used here


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


async def test_redis_keeps_at_most_blobs_max_per_session_dropping_the_oldest(
    redis_server: RedisServer,
) -> None:
    settings = StoreSettings(backend="redis", url=redis_server.url, prefix=unique_prefix(), blobs_max=3)
    store = RedisStore.from_settings(settings, None)
    sid = new_session_id()
    datas = [f"file {i}".encode() for i in range(5)]
    try:
        for data in datas:
            await store.put_blobs(sid, blob(data))
        digests = [hashlib.sha256(d).hexdigest() for d in datas]
        assert set(await store.get_blobs(sid, digests)) == set(digests[2:])
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


async def test_redis_blob_hash_and_order_agree_after_concurrent_writers(redis_server: RedisServer) -> None:
    settings = StoreSettings(backend="redis", url=redis_server.url, prefix=unique_prefix(), blobs_max=5)
    stores = [RedisStore.from_settings(settings, None) for _ in range(2)]
    sid = new_session_id()
    try:
        await asyncio.gather(
            *(s.put_blobs(sid, blob(f"{n}-{i}".encode())) for n, s in enumerate(stores) for i in range(20))
        )
        r = redis.Redis.from_url(redis_server.url)
        try:
            hashed = {k.decode() for k in cast("list[bytes]", r.hkeys(f"{settings.prefix}:blobs:{sid}"))}
            order = cast("list[bytes]", r.lrange(f"{settings.prefix}:blob-order:{sid}", 0, -1))
            ordered = [d.decode() for d in order]
        finally:
            r.close()
        assert len(ordered) == 5
        assert hashed == set(ordered)
    finally:
        for s in stores:
            await s.close()


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
