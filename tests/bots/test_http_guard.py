"""The HTTP connection guard's refusal: a client over the cap reads a 503 with its reason.

The refused client has usually sent (part of) its request before the server accepted it.
Closing a socket with those bytes unread sends a TCP reset, and the client's stack then
drops the 503 it had not read yet: it saw "connection reset by peer" and no reason.
"""

from __future__ import annotations

import asyncio
import json
import socket

from bots.http.guard import BUSY_TEXT, ConnectionGuard


async def _refused_after(sent: bytes) -> bytes:
    """Open a connection that sends `sent` before the server accepts it, let the guard refuse
    it, and return everything the client reads until EOF (a reset raises)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    reader, writer = await asyncio.open_connection(*listener.getsockname())
    try:
        writer.write(sent)
        await writer.drain()
        await asyncio.sleep(0.05)  # the bytes sit in the server's queue before accept, as in a burst
        conn, _ = listener.accept()
        ConnectionGuard(max_connections=1, header_timeout_s=1.0).refuse(conn)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()
        listener.close()


async def test_a_refused_client_that_already_sent_its_headers_reads_the_503_not_a_reset() -> None:
    got = await _refused_after(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: app")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), got
    assert b"Retry-After: " in head
    assert json.loads(body)["error"]["message"] == BUSY_TEXT


async def test_a_refused_client_that_sent_a_large_body_still_gets_its_answer_and_a_close() -> None:
    got = await _refused_after(
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 90000\r\n\r\n" + b"x" * 90_000
    )
    assert got.startswith(b"HTTP/1.1 503 "), got[:200]
