"""Group commit: turns are acknowledged only after their round made them durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.model.messages import ChatMessage
from core.store import jsonl
from core.store.files.committer import Committer


def line(i: int) -> bytes:
    return jsonl.encode_commit(f"{i:032x}", i, float(i), [ChatMessage("user", f"m{i}", float(i))])


async def test_turns_ready_together_share_a_round_and_are_all_stored(tmp_path: Path) -> None:
    committer = Committer(lambda d: Path(d).mkdir(parents=True, exist_ok=True))
    paths = [str(tmp_path / f"t{i}.jsonl") for i in range(10)]
    try:
        done = await asyncio.gather(*(committer.append(p, line(i), f"{i:032x}") for i, p in enumerate(paths)))
    finally:
        await committer.close()
    assert all(d.stored for d in done)
    assert [[m.content for m in jsonl.tail(p, 5)] for p in paths] == [[f"m{i}"] for i in range(10)]


async def test_a_round_that_cannot_make_a_new_entry_durable_acknowledges_nothing(tmp_path: Path) -> None:
    """A minted entry's folder is fsync'd by the next round; if that fails, the round's
    turns fail and are cut off again (and the folder is tried again next round)."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"x")
    committer = Committer(lambda d: None)
    transcript = str(tmp_path / "t.jsonl")
    try:
        committer.sync_before_next_round(str(not_a_folder / "entry.json"))
        with pytest.raises(NotADirectoryError):
            await committer.append(transcript, line(1), f"{1:032x}")
        assert jsonl.tail(transcript, 5) == []  # cut off again: nothing of it stays
        with pytest.raises(NotADirectoryError):  # still pending: tried again
            await committer.append(transcript, line(2), f"{2:032x}")
    finally:
        await committer.close()
