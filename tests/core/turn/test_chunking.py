"""Chunking: nothing lost, nothing over the limit, code fences balanced in every chunk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.turn.chunking import chunk_message, join_chunks, split_message


def fence_lines(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.lstrip(" ").startswith("```"))


line = st.one_of(
    st.just("```"),
    st.just("```python"),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=120).map(
        lambda s: s.replace("\n", " ")
    ),
    st.text(alphabet="ab `\n", max_size=30),
    st.integers(0, 5000).map(lambda n: "x" * n),
)


@settings(max_examples=500)
@given(st.lists(line, max_size=60), st.sampled_from([32, 100, 2000, 4000]))
def test_chunks_carry_the_text_within_the_limit_with_fences_balanced(lines: list[str], limit: int) -> None:
    text = "\n".join(lines)
    chunks = chunk_message(text, limit)
    assert join_chunks(chunks) == text
    assert all(len(c.text) <= limit for c in chunks)
    assert all(fence_lines(c.text) % 2 == 0 for c in chunks)
    # Each chunk carries the next slice of the original, in order.
    assert [c.start for c in chunks[1:]] == [c.end for c in chunks[:-1]]
    assert all(c.text == c.opener + text[c.start : c.end] + c.closer for c in chunks)


def test_a_long_reply_with_a_code_block_reopens_the_fence_with_its_language() -> None:
    code = "\n".join(f"print({i})  # a line of code" for i in range(200))
    text = "Here you go:\n```python\n" + code + "\n```\nThat's it."
    chunks = split_message(text, 2000)
    assert len(chunks) > 2
    assert chunks[1].startswith("```python\n")
    assert chunks[0].endswith("\n```")


def test_cuts_prefer_line_then_word_boundaries() -> None:
    text = ("word " * 30 + "\n") * 20
    for chunk in split_message(text, 200)[:-1]:
        assert chunk.endswith("\n")
    words = "word " * 100
    assert all(c.endswith(" ") for c in split_message(words, 64)[:-1])


def test_short_and_empty_texts_are_one_chunk() -> None:
    assert split_message("hi", 2000) == ["hi"]
    assert split_message("", 2000) == [""]


def test_a_limit_too_small_to_hold_fences_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        split_message("hello", 8)
