"""Small real files for attachment tests: a valid PNG of any size, a text log."""

from __future__ import annotations

import struct
import zlib


def png(width: int = 640, height: int = 480) -> bytes:
    """A valid grey PNG of `width` x `height` pixels (small: the rows compress to nearly nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def log_text(lines: int = 1204) -> bytes:
    return "".join(f"2026-12-01 10:00:{i % 60:02d} INFO line {i}\n" for i in range(1, lines + 1)).encode()
