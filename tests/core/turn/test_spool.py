"""Large attachments stream to disk with bounded memory; PDFs reach the model as text (issue 29)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.testing.server import serve_on_loopback
from core.agents.showing import decode_text, inline_text
from core.config import AttachmentSettings
from core.turn.attachments import (
    PDF_NO_TEXT,
    PDF_UNREADABLE,
    BytesSource,
    UrlSource,
    count_lines,
    read_files,
    sniff,
)
from core.turn.spool import Spool

MIB = 1 << 20
LINE = b"2026-12-04 15:00:00 INFO a line of a long build log\n"


def pdf(*lines: str) -> bytes:
    """A minimal one-page PDF whose page shows `lines` (offsets computed, so it is valid)."""
    text = " ".join(f"({t}) Tj 0 -20 Td" for t in lines)
    stream = f"BT /F1 18 Tf 72 720 Td {text} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture
async def big_file() -> AsyncIterator[tuple[str, bytes]]:
    """A loopback server sending a 12 MiB log in 64 KiB writes (no Content-Length)."""
    body = LINE * (12 * MIB // len(LINE))

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(0, len(body), 64 * 1024):
            await resp.write(body[i : i + 64 * 1024])
        return resp

    app = web.Application()
    app.router.add_get("/big.log", handler)
    runner, port = await serve_on_loopback(app)
    yield f"http://127.0.0.1:{port}/big.log", body
    await runner.cleanup()


async def test_a_large_download_is_streamed_to_disk_with_bounded_memory(
    big_file: tuple[str, bytes], tmp_path: Path
) -> None:
    """12 MiB in, under 2 MiB of Python memory at the peak; the stored file is the whole
    download; the turn holds only the head it shows."""
    url, body = big_file
    options = AttachmentSettings(max_attachment_bytes=25 * MIB, max_text_chars=20_000)
    tracemalloc.start()
    try:
        intake = await read_files([UrlSource("big.log", url)], options, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n12 MiB download: Python peak {peak / MIB:.2f} MiB")
    assert intake.problems == []
    assert peak < 2 * MIB, f"memory grew with the file: {peak / MIB:.1f} MiB"
    [(ref, shown)] = intake.files
    assert (ref.size, ref.mime, ref.lines) == (len(body), "text/plain", body.count(b"\n"))
    assert ref.sha256 == hashlib.sha256(body).hexdigest()
    assert intake.stored[ref.sha256].read_bytes() == body
    assert len(shown) <= 4 * options.max_text_chars + 4
    note = inline_text(ref, shown, options.max_text_chars)
    assert f"showing the first 20,000 characters of {len(body):,} bytes" in note


async def test_a_pdf_reaches_the_model_as_text_under_its_name() -> None:
    intake = await read_files(
        [BytesSource("report.pdf", pdf("Quarterly report", "Revenue grew 12 percent"))], AttachmentSettings()
    )
    assert intake.problems == []
    [(ref, shown)] = intake.files
    assert (ref.name, ref.mime, ref.kind) == ("report.pdf", "application/pdf", "text")
    text = decode_text(shown)
    assert "Quarterly report" in text and "Revenue grew 12 percent" in text
    assert ref.sha256 == hashlib.sha256(shown).hexdigest()  # the stored blob is the text
    shown_to_model = inline_text(ref, shown, 20_000)
    assert shown_to_model.startswith("--- file: report.pdf (text of a PDF, ")
    assert "Revenue grew 12 percent" in shown_to_model


@pytest.mark.parametrize(
    ("data", "why"),
    [(b"%PDF-1.4\n garbage, no objects at all", PDF_UNREADABLE), (pdf(), PDF_NO_TEXT)],
)
async def test_a_pdf_without_readable_text_gets_a_line_in_the_answer(data: bytes, why: str) -> None:
    intake = await read_files([BytesSource("scan.pdf", data)], AttachmentSettings())
    assert intake.files == []
    assert intake.problems == [f"I couldn't read scan.pdf: {why}"]


@settings(max_examples=60, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda t: t.encode("utf-8"))),
    cuts=st.lists(st.integers(0, 300), max_size=6),
)
def test_a_spool_types_counts_and_hashes_as_the_whole_bytes_would(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, cuts: list[int]
) -> None:
    """However a download is cut into chunks, the spool's verdict equals `sniff` on the
    whole bytes (text or not), its line count equals `count_lines`, its sha256 the
    bytes'; and the file holds the bytes."""
    path = tmp_path_factory.mktemp("spool") / "f"
    edges = sorted({0, len(data), *(c for c in cuts if c <= len(data))})

    async def spool() -> Spool:
        async with Spool(path, keep=16) as s:
            for a, b in itertools.pairwise(edges):
                await s.write(data[a:b])
        return s

    s = asyncio.run(spool())
    sniffed = sniff(data)
    is_text = sniffed is not None and sniffed[1] == "text"
    if not data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"%PDF-")):
        assert s.text_ok == is_text, data
    if is_text:
        assert s.text_lines() == count_lines(decode_text(data))
    assert s.sha256 == hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data
    assert bytes(s.head) == data[: s.keep]
