"""One attachment on its way to disk: written chunk by chunk, typed and hashed as it goes.

A download is handed to a `Spool` 64 KiB at a time; the spool writes each chunk to its
file with `aiofiles` (the write leaves the event loop) and keeps only what typing and
showing need: the sha256 so far, the first `keep` bytes (enough to sniff an image header
and to show a text file up to `max_text_chars`), whether every byte so far is UTF-8
without NUL, and the line count. Memory per download is `keep` plus one chunk, whatever
the file's size: a 25 MiB file costs what a 25 KiB one does until a model needs its
bytes (an image for a vision model is read back whole then, once).

PDFs are read for their text with `pypdf` (on a worker thread: it is CPU-bound), page by
page up to a cap, so a shared PDF reaches the model as text under its own name.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

import aiofiles
import aiofiles.os

log = logging.getLogger("chatlane.attachments")

SNIFF_BYTES = 64 * 1024
"""Bytes kept of every file at least: image headers and the text checks need the head."""


class Spool:
    """An attachment's file being written; use as `async with Spool(path, keep) as s`."""

    def __init__(self, path: Path, keep: int) -> None:
        self.path = path
        self.keep = max(keep, SNIFF_BYTES)
        self.size = 0
        self.head = bytearray()
        self.lines = 0
        self.text_ok = True
        """Every byte so far is UTF-8 (a BOM allowed) without NUL."""
        self._hash = hashlib.sha256()
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self._last = b""
        self._file: Any = None

    async def __aenter__(self) -> Spool:
        self._file = await aiofiles.open(self.path, "wb")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._file.close()
        if self.text_ok:
            try:
                self._decoder.decode(b"", final=True)  # a multi-byte character cut at the end
            except UnicodeDecodeError:
                self.text_ok = False

    async def write(self, chunk: bytes) -> None:
        """Take the next chunk (in order); written to the file before this returns."""
        self.size += len(chunk)
        self._hash.update(chunk)
        if len(self.head) < self.keep:
            self.head += chunk[: self.keep - len(self.head)]
        if self.text_ok:
            if b"\x00" in chunk:
                self.text_ok = False
            else:
                try:
                    self._decoder.decode(chunk)
                except UnicodeDecodeError:
                    self.text_ok = False
        self.lines += chunk.count(b"\n")
        if chunk:
            self._last = chunk[-1:]
        await self._file.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    @property
    def whole(self) -> bool:
        """Whether `head` holds the entire file."""
        return len(self.head) == self.size

    def text_lines(self) -> int:
        """Lines as `count_lines` counts them in the decoded text (a last line without \\n counts)."""
        bom = 3 if self.head.startswith(codecs.BOM_UTF8) else 0
        if self.size <= bom:
            return 0
        return self.lines + (0 if self._last == b"\n" else 1)

    async def read_all(self) -> bytes:
        """The whole file (an image a model is to see); the only read that grows with it."""
        async with aiofiles.open(self.path, "rb") as f:
            return bytes(await f.read())


def pdf_text(path: Path, max_chars: int) -> str | None:
    """The text of a PDF, page by page, up to `max_chars` characters; None when it cannot
    be read (damaged, encrypted). Blocking: run it on a worker thread."""
    from pypdf import PdfReader  # imported on first use: most bots never see a PDF
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            return None
        parts: list[str] = []
        total = 0
        for page in reader.pages:
            text = page.extract_text() or ""
            parts.append(text)
            total += len(text) + 1
            if total >= max_chars:
                break
        return "\n".join(parts)[:max_chars]
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        log.info("a PDF could not be read: %s", exc)
        return None
    except Exception:  # pypdf raises many kinds on hostile input; the turn goes on
        log.exception("reading a PDF failed")
        return None


async def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        await aiofiles.os.remove(path)
