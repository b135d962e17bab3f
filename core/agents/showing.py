"""How an agent shows a message's files to a model: a placeholder ("[image: cat.png
640x480]", "[file: log.txt, 1,204 lines]") or a text file inline, with a header and a
note where it was truncated."""

from __future__ import annotations

from core.model import AttachmentRef

TRUNCATED_NOTE = "[… truncated: showing {shown:,} of {total:,} characters]"
TRUNCATED_HEAD_NOTE = "[… truncated: showing the first {shown:,} characters of {size:,} bytes]"


def decode_text(data: bytes, *, strict: bool = False) -> str:
    return data.decode("utf-8-sig", "strict" if strict else "replace")


def placeholder(ref: AttachmentRef) -> str:
    """What an agent that cannot see the file is told about it."""
    if ref.kind == "image":
        size = f" {ref.width}x{ref.height}" if ref.width and ref.height else ""
        return f"[image: {ref.name}{size}]"
    return f"[file: {ref.name}, {ref.lines:,} lines]"


def inline_text(ref: AttachmentRef, data: bytes, max_chars: int) -> str:
    """A text file for the model: a header naming it (a PDF says so: its text is shown),
    its text, and a note if truncated. `data` may be only the file's head (shorter than
    `ref.size`: a large file is not read whole to show `max_chars` of it); the note then
    gives the file's size, since its length in characters was never counted."""
    text = decode_text(data)
    kind = "text of a PDF" if ref.mime == "application/pdf" else ref.mime
    header = f"--- file: {ref.name} ({kind}, {ref.lines:,} lines) ---"
    whole = len(data) >= ref.size
    if whole and len(text) <= max_chars:
        return f"{header}\n{text}\n--- end of {ref.name} ---"
    if whole:
        note = TRUNCATED_NOTE.format(shown=max_chars, total=len(text))
    else:
        note = TRUNCATED_HEAD_NOTE.format(shown=min(max_chars, len(text)), size=ref.size)
    return f"{header}\n{text[:max_chars]}\n{note}\n--- end of {ref.name} ---"
