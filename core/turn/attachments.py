"""Files on incoming messages: read under caps, typed from their bytes, shown to agents.

`read_files` downloads a message's `FileSource`s concurrently under one deadline and
`[attachments]` caps, streaming each to a file in the caller's folder (core/turn/spool.py:
memory per download stays bounded, whatever the cap), and sniffs each file's type from
its bytes (never from its name or the sender's word): png, jpeg, gif and webp are
images; UTF-8 text without NUL bytes is text (SVG and HTML included: they are shown as
text, never rendered); a PDF is read for its text (`pypdf`), which is what is stored and
shown, under the PDF's name. Every file that cannot be read gives one short line for the
answer ("I couldn't read report.pdf: larger than 25 MiB"); the turn goes on with the rest.

How agents show a file to a model lives with them (core/agents/showing.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import aiofiles

from core.agents import decode_text
from core.config import AttachmentSettings
from core.model import AttachmentKind, AttachmentRef, FileSource, FileTooLarge, FileUnavailable
from core.turn.fetch import Write, fetch_url, stream_url
from core.turn.spool import Spool, pdf_text

log = logging.getLogger("chatlane.attachments")

COULD_NOT_READ = "I couldn't read {name}: {why}"
TOO_LARGE = "larger than {limit}"
UNKNOWN_TYPE = "it is not an image or a text file"
TOO_SLOW = "it took too long to download"
TOO_MANY = "only {n} files per message are read"
UNREADABLE = "it could not be downloaded"


PDF_UNREADABLE = "it is a PDF that could not be read"
PDF_NO_TEXT = "it is a PDF without text (a scan?)"
PDF_MAX_CHARS = 1_000_000
"""Text kept of one PDF (what is stored as its blob); models are shown `max_text_chars`."""


@runtime_checkable
class StreamingSource(Protocol):
    """A `FileSource` that can hand its bytes over chunk by chunk (large files)."""

    async def fetch_to(self, write: Write, max_bytes: int) -> None:
        """Give the bytes to `write` in order; `FileTooLarge` past `max_bytes`."""
        ...


@dataclass(slots=True)
class Intake:
    """What a message's files gave: readable ones with what the turn shows of them (an
    image whole; a text file's head, enough for `max_text_chars`; a PDF's text), where
    each one's whole bytes are (`stored`: sha256 -> file, for the blob store), and the
    notes for the rest."""

    files: list[tuple[AttachmentRef, bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stored: dict[str, Path] = field(default_factory=dict)

    @property
    def refs(self) -> tuple[AttachmentRef, ...]:
        return tuple(ref for ref, _ in self.files)


def human_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def display_name(name: str) -> str:
    """A file name as it may appear in an answer: one line, at most 80 characters."""
    clean = " ".join(name.split()) or "a file"
    return clean if len(clean) <= 80 else clean[:79] + "…"


async def read_files(
    sources: Sequence[FileSource], settings: AttachmentSettings, folder: Path | None = None
) -> Intake:
    """Read up to `max_attachments` files, together within `fetch_timeout_s`, each streamed
    to a file in `folder` (kept there for the caller to store; without a folder, a
    temporary one that is gone when this returns)."""
    if folder is None:
        temp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="chatlane-files-"))
        try:
            return await read_files(sources, settings, temp)
        finally:
            await asyncio.to_thread(shutil.rmtree, temp, True)
    intake = Intake()
    cap = settings.max_attachment_bytes
    keep = 4 * settings.max_text_chars + 4  # UTF-8: at most 4 bytes a character
    taken = list(sources[: settings.max_attachments])
    for extra in sources[settings.max_attachments :]:
        intake.problems.append(_note(extra.name, TOO_MANY.format(n=settings.max_attachments)))
    results: list[Spool | str | None] = [None] * len(taken)

    async def one(i: int, source: FileSource) -> None:
        if source.declared_size is not None and source.declared_size > cap:
            results[i] = TOO_LARGE.format(limit=human_size(cap))
            return
        try:
            async with Spool(folder / f"{i}.bin", keep) as spool:
                if isinstance(source, StreamingSource):
                    await source.fetch_to(spool.write, cap)
                else:
                    await spool.write(await source.fetch(cap))
            results[i] = spool
        except FileTooLarge:
            results[i] = TOO_LARGE.format(limit=human_size(cap))
        except FileUnavailable as exc:
            results[i] = str(exc) or UNREADABLE
            log.info("attachment %r not read: %s (%s)", source.name, results[i], exc.__cause__ or "-")
        except Exception:  # a source's own bug (or a full disk) must not fail the turn
            log.exception("reading attachment %r failed", source.name)
            results[i] = UNREADABLE

    tasks = [asyncio.create_task(one(i, s), name=f"attachment {i}") for i, s in enumerate(taken)]
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=settings.fetch_timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for i, (source, result) in enumerate(zip(taken, results, strict=True)):
        if result is None:
            intake.problems.append(_note(source.name, TOO_SLOW))
        elif isinstance(result, str):
            intake.problems.append(_note(source.name, result))
        else:
            got = await _take(source.name, result, folder / f"{i}.txt")
            if isinstance(got, str):
                intake.problems.append(_note(source.name, got))
            else:
                ref, shown, path = got
                intake.files.append((ref, shown))
                intake.stored[ref.sha256] = path
    return intake


async def _take(name: str, spool: Spool, text_path: Path) -> tuple[AttachmentRef, bytes, Path] | str:
    """A downloaded file's reference, what the turn shows of it and the file of its whole
    bytes; or why it cannot be read."""
    head = bytes(spool.head)
    if head.startswith(b"%PDF-"):
        text = await asyncio.to_thread(pdf_text, spool.path, PDF_MAX_CHARS)
        if text is None:
            return PDF_UNREADABLE
        if not text.strip():
            return PDF_NO_TEXT
        data = text.encode("utf-8")
        async with aiofiles.open(text_path, "wb") as f:
            await f.write(data)
        ref = AttachmentRef(
            name=display_name(name),
            mime="application/pdf",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            kind="text",
            lines=count_lines(text),
        )
        return ref, data, text_path
    image = _image_mime(head)
    if image is not None:
        data = await spool.read_all()  # a model that sees images needs them whole
        width, height = image_size(data)
        ref = AttachmentRef(display_name(name), image, spool.size, spool.sha256, "image", width, height)
        return ref, data, spool.path
    if not spool.text_ok:
        return UNKNOWN_TYPE
    mime = _text_mime(decode_text(head), spool.whole)
    ref = AttachmentRef(display_name(name), mime, spool.size, spool.sha256, "text", lines=spool.text_lines())
    return ref, head, spool.path


def _note(name: str, why: str) -> str:
    return COULD_NOT_READ.format(name=display_name(name), why=why)


def describe(name: str, data: bytes) -> AttachmentRef | None:
    """The reference of a readable file; None when it is neither an image nor text."""
    sniffed = sniff(data)
    if sniffed is None:
        return None
    mime, kind = sniffed
    width = height = lines = 0
    if kind == "image":
        width, height = image_size(data)
    else:
        lines = count_lines(decode_text(data))
    return AttachmentRef(
        name=display_name(name),
        mime=mime,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        kind=kind,
        width=width,
        height=height,
        lines=lines,
    )


def sniff(data: bytes) -> tuple[str, AttachmentKind] | None:
    """(MIME type, kind) from the bytes alone (a whole file; a PDF's bytes are not text)."""
    image = _image_mime(data)
    if image is not None:
        return image, "image"
    if data.startswith(b"%PDF-") or b"\x00" in data:
        return None
    try:
        text = decode_text(data, strict=True)
    except UnicodeDecodeError:
        return None
    return _text_mime(text, whole=True), "text"


def _image_mime(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _text_mime(text: str, whole: bool) -> str:
    """The MIME type of a text from its start; JSON only when `whole` (it must parse)."""
    head = text.lstrip()[:512].lower()
    if head.startswith("<svg") or (head.startswith("<?xml") and "<svg" in head):
        return "image/svg+xml"  # shown as text, never rendered
    if head.startswith(("<!doctype html", "<html")):
        return "text/html"
    if whole and head.startswith(("{", "[")):
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            return "application/json"
    return "text/plain"


def count_lines(text: str) -> int:
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the image header; (0, 0) when it cannot be read."""
    try:
        if data.startswith(b"\x89PNG"):
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if data[:3] == b"GIF":
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if data[:4] == b"RIFF":
            return _webp_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except struct.error:
        pass
    return 0, 0


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    return 0, 0


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return 0, 0


class BytesSource:
    """A file whose bytes are already here (an HTTP data URL, tests)."""

    def __init__(self, name: str, data: bytes) -> None:
        self._name = name
        self._data = data

    @property
    def name(self) -> str:
        return self._name

    @property
    def declared_size(self) -> int | None:
        return len(self._data)

    async def fetch(self, max_bytes: int) -> bytes:
        if len(self._data) > max_bytes:
            raise FileTooLarge()
        return self._data

    def __repr__(self) -> str:
        return f"BytesSource({self._name!r}, {len(self._data)} bytes)"


class UrlSource:
    """A file behind an http(s) URL; `headers` (e.g. a bot token) never show in `repr`."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        declared_size: int | None = None,
        headers: dict[str, str] | None = None,
        public_only: bool = False,
        hosts: frozenset[str] | None = None,
    ) -> None:
        self._name = name
        self.url = url
        self._size = declared_size
        self._headers = dict(headers or {})
        self.public_only = public_only
        self.hosts = hosts
        """When set, the URL and its redirects must be on one of these hosts."""

    @property
    def name(self) -> str:
        return self._name

    @property
    def declared_size(self) -> int | None:
        return self._size

    async def fetch(self, max_bytes: int) -> bytes:
        return await fetch_url(
            self.url,
            max_bytes=max_bytes,
            headers=self._headers,
            public_only=self.public_only,
            hosts=self.hosts,
        )

    async def fetch_to(self, write: Write, max_bytes: int) -> None:
        await stream_url(
            self.url,
            write,
            max_bytes=max_bytes,
            headers=self._headers,
            public_only=self.public_only,
            hosts=self.hosts,
        )

    def __repr__(self) -> str:
        return f"UrlSource({self._name!r}, {self.url!r})"
