"""The transcript format: whole commits per line, read backwards only as far as needed."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from core.model.messages import ChatMessage
from core.store import jsonl

lines = st.lists(
    st.one_of(
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
        st.integers(0, 20_000).map(lambda n: b"y" * n),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(lines, st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")))
def test_lines_backwards_gives_every_whole_line_last_first_and_skips_a_torn_one(
    body: list[bytes], torn: bytes
) -> None:
    data = b"".join(line + b"\n" for line in body) + torn
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        got = list(jsonl._lines_backwards(f.fileno(), len(data)))
    assert got == [line for line in reversed(body) if line.strip()]


def test_tail_returns_the_last_records_across_commits_and_old_single_record_lines() -> None:
    path = os.path.join(tempfile.mkdtemp(), "t.jsonl")
    with open(path, "wb") as f:
        f.write(b'{"role":"user","content":"old","at":1.0}\n')
        for i in range(3):
            recs = [ChatMessage("user", f"u{i}", 2.0), ChatMessage("assistant", f"a{i}", 2.0)]
            f.write(jsonl.encode_commit(f"{i:032x}", i + 1, 2.0 + i, recs) + b"\n")
    assert [m.content for m in jsonl.tail(path, 3)] == ["a1", "u2", "a2"]
    assert [m.content for m in jsonl.tail(path, 100)] == ["old", "u0", "a0", "u1", "a1", "u2", "a2"]
    progress = jsonl.last_progress(path)
    assert progress is not None and (progress.turns, progress.at) == (3, 4.0)


def test_a_commit_already_last_in_the_file_is_not_written_again() -> None:
    path = os.path.join(tempfile.mkdtemp(), "t.jsonl")
    line = jsonl.encode_commit("c" * 32, 1, 1.0, [ChatMessage("user", "x", 1.0)])
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        assert jsonl.write_commit(fd, line, "c" * 32).stored
        assert not jsonl.write_commit(fd, line, "c" * 32).stored
    finally:
        os.close(fd)
    assert [m.content for m in jsonl.tail(path, 10)] == ["x"]
