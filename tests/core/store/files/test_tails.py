"""The file store's memory of transcript tails: always what the file says, bounded in size."""

from __future__ import annotations

import os
from pathlib import Path

from core.model.messages import ChatMessage
from core.store import jsonl
from core.store.files.tails import Tails


def append(path: Path, i: int, text: str) -> tuple[int, int, list[ChatMessage], jsonl.Progress]:
    records = [ChatMessage("user", text, float(i))]
    start = path.stat().st_size if path.exists() else 0
    with path.open("ab") as f:
        f.write(jsonl.encode_commit(f"{i:032x}", i, float(i), records) + b"\n")
    return start, path.stat().st_size, records, jsonl.Progress(f"{i:032x}", i, float(i))


def test_a_tail_follows_commits_of_other_processes_and_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    tails = Tails()
    for i in range(1, 4):
        append(path, i, f"m{i}")
    assert [m.content for m in tails.read(str(path), 2)[0]] == ["m2", "m3"]
    append(path, 4, "m4")  # written by someone else: seen by its size
    records, progress = tails.read(str(path), 2)
    assert [m.content for m in records] == ["m3", "m4"] and progress is not None and progress.turns == 4
    os.replace(_other(tmp_path), path)  # a different file now: read again, not extended
    assert [m.content for m in tails.read(str(path), 5)[0]] == ["other"]


def _other(tmp_path: Path) -> Path:
    other = tmp_path / "other.jsonl"
    append(other, 1, "other")
    return other


def test_commits_of_this_process_extend_the_tail_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    tails = Tails()
    append(path, 1, "m1")
    tails.read(str(path), 5)
    start, end, records, progress = append(path, 2, "m2")
    tails.committed(str(path), start, end, records, progress)
    assert [m.content for m in tails.read(str(path), 5)[0]] == ["m1", "m2"]


def test_huge_messages_do_not_make_the_memory_grow_past_its_budget(tmp_path: Path) -> None:
    tails = Tails(budget=10_000)
    for n in range(5):
        path = tmp_path / f"{n}.jsonl"
        for i in range(1, 4):
            append(path, i, "x" * 3000)
        assert len(tails.read(str(path), 3)[0]) == 3  # still answered in full
    assert tails._weight <= 10_000
    assert len(tails) <= 1


def test_the_weight_follows_commits_past_the_records_kept(tmp_path: Path) -> None:
    """The weight is kept by what each commit adds and what falls off the tail, so it must
    stay the sum of the records kept however many commits pass the cap."""
    path = tmp_path / "t.jsonl"
    tails = Tails()
    tails.keep = 4
    append(path, 1, "a")
    tails.read(str(path), 4)
    for i in range(2, 40):
        start, end, records, progress = append(path, i, "x" * i)
        tails.committed(str(path), start, end, records, progress)
        kept = tails.read(str(path), 4)[0]
        assert tails._weight == sum(len(m.content) for m in kept) == tails._tails[str(path)].weight
    many = [ChatMessage("user", "y" * n, 0.0) for n in range(1, 7)]  # more than the tail keeps
    start = path.stat().st_size
    with path.open("ab") as f:
        f.write(jsonl.encode_commit(f"{99:032x}", 99, 99.0, many) + b"\n")
    tails.committed(str(path), start, path.stat().st_size, many, jsonl.Progress(f"{99:032x}", 99, 99.0))
    assert tails._weight == sum(len(m.content) for m in many[-4:])
