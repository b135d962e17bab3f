"""Reading attachments: types from bytes, caps, one line per unreadable file, safe downloads."""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bots.testing.files import log_text, png
from bots.testing.server import serve_on_loopback
from core.agents.showing import TRUNCATED_NOTE, inline_text, placeholder
from core.config import AttachmentSettings
from core.model.messages import FileTooLarge, FileUnavailable
from core.turn.attachments import BytesSource, UrlSource, describe, read_files, sniff
from core.turn.fetch import NOT_HTTP, REFUSED_ADDRESS, fetch_url, is_public


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def webp(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize(
    ("data", "mime", "size"),
    [
        (png(640, 480), "image/png", (640, 480)),
        (jpeg(800, 600), "image/jpeg", (800, 600)),
        (gif(32, 16), "image/gif", (32, 16)),
        (webp(1024, 768), "image/webp", (1024, 768)),
    ],
)
def test_images_are_typed_and_measured_from_their_bytes(
    data: bytes, mime: str, size: tuple[int, int]
) -> None:
    ref = describe("whatever.txt", data)  # the name says text; the bytes win
    assert ref is not None
    assert (ref.mime, ref.kind, (ref.width, ref.height)) == (mime, "image", size)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "image/svg+xml"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "text/html"),
        (b'{"a": [1, 2]}', "application/json"),
        ("plain text, ünïcode\n".encode(), "text/plain"),
    ],
)
def test_svg_html_json_and_plain_text_are_text_never_images(data: bytes, mime: str) -> None:
    assert sniff(data) == (mime, "text")


@pytest.mark.parametrize(
    "data", [b"%PDF-1.7\n...", b"PK\x03\x04\x00\x00zip", b"\xff\xfe\x00bad utf", b"\xc3\x28"]
)
def test_binary_files_are_neither_images_nor_text(data: bytes) -> None:
    assert describe("report.txt", data) is None


def test_placeholders_name_what_the_agent_cannot_see() -> None:
    image, text = describe("cat.png", png(640, 480)), describe("log.txt", log_text(1204))
    assert image is not None and text is not None
    assert placeholder(image) == "[image: cat.png 640x480]"
    assert placeholder(text) == "[file: log.txt, 1,204 lines]"


def test_a_long_text_file_is_truncated_with_a_note() -> None:
    data = b"x" * 50
    ref = describe("big.txt", data)
    assert ref is not None
    shown = inline_text(ref, data, 10)
    assert shown.startswith("--- file: big.txt (text/plain, 1 lines) ---\nxxxxxxxxxx\n")
    assert TRUNCATED_NOTE.format(shown=10, total=50) in shown


class Counting(BytesSource):
    def __init__(self, name: str, data: bytes, *, declared: int | None = None, hang: bool = False) -> None:
        super().__init__(name, data)
        self.declared, self.hang, self.fetched = declared, hang, 0

    @property
    def declared_size(self) -> int | None:
        return self.declared

    async def fetch(self, max_bytes: int) -> bytes:
        self.fetched += 1
        if self.hang:
            await asyncio.Event().wait()
        return await super().fetch(max_bytes)


class Broken(BytesSource):
    async def fetch(self, max_bytes: int) -> bytes:
        raise FileUnavailable("the download was refused")


async def test_caps_give_one_line_per_unreadable_file_and_the_rest_is_read() -> None:
    settings = AttachmentSettings(max_attachment_bytes=100, max_attachments=5, fetch_timeout_s=0.3)
    announced_big = Counting("huge.bin", b"", declared=10_000)
    actually_big = Counting("sneaky.txt", b"y" * 500)
    slow = Counting("slow.txt", b"z", hang=True)
    ok = Counting("ok.txt", b"fine\n")
    sources = [announced_big, actually_big, slow, Broken("gone.png", b""), ok, Counting("sixth.txt", b"6")]
    intake = await read_files(sources, settings)
    assert intake.problems == [
        "I couldn't read sixth.txt: only 5 files per message are read",
        "I couldn't read huge.bin: larger than 100 bytes",
        "I couldn't read sneaky.txt: larger than 100 bytes",
        "I couldn't read slow.txt: it took too long to download",
        "I couldn't read gone.png: the download was refused",
    ]
    assert [r.name for r in intake.refs] == ["ok.txt"]
    assert announced_big.fetched == 0  # refused on what the platform announced


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("192.168.0.1", False),
        ("172.16.5.4", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("fd00::1", False),
        ("fe80::1", False),
    ],
)
def test_only_public_unicast_addresses_count_as_public(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.fixture
async def files_server() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A loopback HTTP server that records every request it gets."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        if request.path == "/endless":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(100):
                await resp.write(b"a" * 1024)
            return resp
        if request.path == "/hop":
            raise web.HTTPFound(f"http://localhost:{request.url.port}/landing")
        return web.Response(body=png())

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner, port = await serve_on_loopback(app)
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "127.0.0.2"])
async def test_public_only_downloads_never_reach_loopback(
    files_server: tuple[str, list[web.Request]], host: str
) -> None:
    base, seen = files_server
    port = base.rsplit(":", 1)[1]
    with pytest.raises(FileUnavailable, match=REFUSED_ADDRESS):
        await fetch_url(f"http://{host}:{port}/cat.png", max_bytes=1 << 20, public_only=True)
    assert seen == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"])
async def test_only_http_urls_are_fetched(url: str) -> None:
    with pytest.raises(FileUnavailable, match=re.escape(NOT_HTTP)):
        await UrlSource("x", url, public_only=True).fetch(100)


async def test_a_body_past_the_cap_is_cut_off_even_without_a_length(
    files_server: tuple[str, list[web.Request]],
) -> None:
    base, _ = files_server
    with pytest.raises(FileTooLarge):
        await fetch_url(f"{base}/endless", max_bytes=10_000)


async def test_credentials_are_not_sent_to_the_host_a_redirect_points_at(
    files_server: tuple[str, list[web.Request]],
) -> None:
    base, seen = files_server
    data = await fetch_url(f"{base}/hop", max_bytes=1 << 20, headers={"Authorization": "Bearer xoxb-secret"})
    assert data == png()
    assert [(r.host.split(":")[0], r.headers.get("Authorization")) for r in seen] == [
        ("127.0.0.1", "Bearer xoxb-secret"),
        ("localhost", None),
    ]
