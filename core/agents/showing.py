"""How an agent shows a message's files to a model: a placeholder ("[image: cat.png
640x480]", "[file: log.txt, 1,204 lines]") or a text file inline, with a header and a
note where it was truncated."""

from __future__ import annotations

from core.model import AttachmentRef

TRUNCATED_NOTE = "[… truncated: showing {shown:,} of {total:,} characters]"


def decode_text(data: bytes, *, strict: bool = False) -> str:
    return data.decode("utf-8-sig", "strict" if strict else "replace")


def placeholder(ref: AttachmentRef) -> str:
    """What an agent that cannot see the file is told about it."""
    if ref.kind == "image":
        size = f" {ref.width}x{ref.height}" if ref.width and ref.height else ""
        return f"[image: {ref.name}{size}]"
    return f"[file: {ref.name}, {ref.lines:,} lines]"


def inline_text(ref: AttachmentRef, data: bytes, max_chars: int) -> str:
    """A text file for the model: a header naming it, its text, and a note if truncated."""
    text = decode_text(data)
    header = f"--- file: {ref.name} ({ref.mime}, {ref.lines:,} lines) ---"
    if len(text) <= max_chars:
        return f"{header}\n{text}\n--- end of {ref.name} ---"
    note = TRUNCATED_NOTE.format(shown=max_chars, total=len(text))
    return f"{header}\n{text[:max_chars]}\n{note}\n--- end of {ref.name} ---"
