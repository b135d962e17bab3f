"""Split a long reply into platform-sized messages (Discord 2,000, Slack 4,000 chars).

Cuts prefer a line break, then a space, and only then the middle of a word. A chunk
that ends inside a ``` code block gets a closing fence, and the next chunk re-opens it
with the same opening line (language kept), so every chunk renders as code on its
own. Each `Chunk` records which slice of the original text it carries and which fence
lines were added around it, so the original is exactly recoverable (`join_chunks`).
"""

from __future__ import annotations

from dataclasses import dataclass

FENCE = "```"
MIN_LIMIT = 32


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    """What to send: `opener + original[start:end] + closer`."""
    start: int
    end: int
    opener: str = ""
    closer: str = ""


def _scan(text: str, start: int, end: int, opened: str | None) -> str | None:
    """The fence state at `end` given the state at `start`: the open fence's line, or None."""
    i = start
    while i < end:
        nl = text.find("\n", i, end)
        line_end = end if nl == -1 else nl
        at_line_start = i == 0 or text[i - 1] == "\n"
        if at_line_start:
            line = text[i:line_end]
            if line.lstrip(" ").startswith(FENCE):
                opened = None if opened is not None else line.strip()
        if nl == -1:
            break
        i = nl + 1
    return opened


def _cut(text: str, pos: int, budget: int) -> int:
    end = pos + budget
    if end >= len(text):
        return len(text)
    window = text[pos:end]
    nl = window.rfind("\n")
    if nl >= budget // 2:
        return pos + nl + 1
    space = window.rfind(" ")
    if space >= budget // 4:
        return pos + space + 1
    return max(end, pos + 1)


def _not_before_a_fence(text: str, pos: int, cut: int) -> int:
    """Move a mid-line cut back so the next chunk does not begin with spaces and
    backticks: at the start of a message (or after a re-opened fence) they would read
    as a fence line that the original text does not have there."""
    while cut > pos + 1 and cut < len(text) and text[cut - 1] != "\n" and text[cut] in " `":
        cut -= 1
    return cut


def chunk_message(text: str, limit: int) -> list[Chunk]:
    """Chunks of at most `limit` characters that carry all of `text`, in order."""
    if limit < MIN_LIMIT:
        raise ValueError(f"chunk limit must be at least {MIN_LIMIT}")
    chunks: list[Chunk] = []
    pos, opened = 0, None
    while pos < len(text) or not chunks:
        # Re-open with the original fence line (keeps the language) unless it is long.
        opener = "" if not opened else f"{opened}\n" if len(opened) <= limit // 4 else f"{FENCE}\n"
        budget = limit - len(opener)
        while True:
            cut = _not_before_a_fence(text, pos, _cut(text, pos, budget))
            after = _scan(text, pos, cut, opened)
            closer = f"\n{FENCE}" if after else ""
            if len(opener) + (cut - pos) + len(closer) <= limit:
                break
            budget = max(1, budget - (len(opener) + (cut - pos) + len(closer) - limit))
        chunks.append(Chunk(opener + text[pos:cut] + closer, pos, cut, opener, closer))
        pos, opened = cut, after
        if not text:
            break
    return chunks


def split_message(text: str, limit: int) -> list[str]:
    """The texts to send, in order."""
    return [c.text for c in chunk_message(text, limit)]


def join_chunks(chunks: list[Chunk]) -> str:
    """The original text, without the fence lines that splitting added."""
    return "".join(c.text[len(c.opener) : len(c.text) - len(c.closer)] for c in chunks)


def open_fence(text: str) -> str | None:
    """The opening line of the ``` block `text` ends inside, or None when it ends outside one."""
    return _scan(text, 0, len(text), None)
