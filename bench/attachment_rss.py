"""Peak memory of reading one large attachment: `python -m bench.attachment_rss [MIB] [KIND]`.

A loopback HTTP server (this process) serves one file of MIB MiB (default 25: Discord's
cap) of KIND `text` (log lines) or `image` (a PNG header, then noise). A child process
reads it the way a turn does (`core.turn.context.read_attachments`: download, type it,
store its bytes in a files store) after a warm-up with a small file, with its peak RSS
reset (Linux `clear_refs`; VmHWM, else `ru_maxrss`) just before: the peak over that RSS
is what the large file cost. Prints one line per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from bots.testing.server import serve_on_loopback

MIB = 1 << 20


def _body(kind: str, size: int) -> bytes:
    if kind == "image":
        head = (
            b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (640).to_bytes(4, "big") + (480).to_bytes(4, "big")
        )
        return head + os.urandom(size - len(head))
    line = b"2026-12-04 15:00:00 INFO a line of a long build log, nothing to see here\n"
    return (line * (size // len(line) + 1))[:size]


def _peak() -> int:
    """The peak RSS in KiB since the last `_reset_peak` (VmHWM), else `ru_maxrss`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> int:
    """Start the peak again at the current RSS (Linux: clear_refs 5); that RSS in KiB.
    Without it, the peak of the imports (pydantic, discord.py) would hide the file's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _peak()


async def _child(url_small: str, url_large: str, mib: int) -> dict[str, int]:
    from core.config import AttachmentSettings
    from core.model import Inbound
    from core.store.files.store import FileStore
    from core.turn.attachments import UrlSource
    from core.turn.context import read_attachments

    settings = AttachmentSettings(max_attachment_bytes=max(mib, 1) * MIB + 1)
    with tempfile.TemporaryDirectory() as d:
        store = FileStore(Path(d) / "state")
        try:
            sid = "0" * 32

            async def read(url: str) -> int:
                inbound = Inbound("http", "u", "c", "", "m", attachments=(UrlSource("file", url),))
                intake = await read_attachments(store, sid, inbound, settings)
                if intake.problems:
                    raise SystemExit(f"not read: {intake.problems}")
                return sum(ref.size for ref in intake.refs)

            await read(url_small)
            before = _reset_peak()
            size = await read(url_large)
            after = _peak()
        finally:
            await store.close()
    return {"before_kib": before, "after_kib": after, "size": size}


async def _measure(kind: str, mib: int) -> dict[str, int]:
    files = {"small": _body(kind, 64 * 1024), "large": _body(kind, mib * MIB)}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=files[request.match_info["name"]])

    app = web.Application()
    app.router.add_get("/{name}", handler)
    runner, port = await serve_on_loopback(app)
    try:
        base = f"http://127.0.0.1:{port}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.attachment_rss",
            "--child",
            f"{base}/small",
            f"{base}/large",
            str(mib),
            stdout=subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"child failed ({proc.returncode})")
        result: dict[str, int] = json.loads(out)
        return result
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(asyncio.run(_child(argv[1], argv[2], int(argv[3])))))
        return 0
    mib = int(argv[0]) if argv else 25
    kinds = argv[1:] or ["text", "image"]
    for kind in kinds:
        r = asyncio.run(_measure(kind, mib))
        grew = (r["after_kib"] - r["before_kib"]) / 1024
        print(
            f"{kind:5} {mib} MiB attachment: peak RSS {r['before_kib'] / 1024:.1f} MiB after warm-up, "
            f"{r['after_kib'] / 1024:.1f} MiB after the large file (+{grew:.1f} MiB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
