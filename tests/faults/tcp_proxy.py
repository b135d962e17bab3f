"""A TCP proxy the test controls, for network faults between chatlane and Redis.

`stall()` stops forwarding in both directions (bytes wait, sockets stay open: the
worst case, since nothing raises), `resume()` lets them through. `drop_reply_to(*markers)`
forwards the next request that contains every marker to the server, swallows the server's
answer and closes the client's connection: the request took effect, the client never
heard so. Exactly one reply is swallowed per call; a `-NOSCRIPT` answer (redis-py's
EVALSHA before the script is loaded: nothing took effect) is passed on and the proxy
stays armed for the EVALSHA that follows the SCRIPT LOAD. `sent(marker)` counts the
requests that carried a marker, so a test can see the client's retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._drop_markers: tuple[bytes, ...] | None = None
        self.dropped = 0
        self.requests: list[bytes] = []
        """Every request chunk forwarded, in order (tests count retries with `sent`)."""
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def drop_reply_to(self, *markers: bytes) -> None:
        """Swallow the answer to the next request that holds every one of `markers`."""
        if not markers:
            raise ValueError("drop_reply_to needs at least one marker")
        self._drop_markers = markers

    def sent(self, marker: bytes) -> int:
        """How many forwarded requests held `marker`."""
        return sum(marker in data for data in self.requests)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        dropping: list[tuple[bytes, ...]] = []  # markers whose answer is swallowed next
        up = asyncio.create_task(self._requests(client_r, server_w, dropping))
        down = asyncio.create_task(self._answers(server_r, client_w, dropping))
        self._pipes |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            self._pipes -= {up, down}
            for w in (client_w, server_w):
                w.close()

    async def _requests(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, dropping: list[tuple[bytes, ...]]
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                await self._flowing.wait()
                self.requests.append(data)
                markers = self._drop_markers
                if markers is not None and all(m in data for m in markers):
                    self._drop_markers = None
                    dropping.append(markers)
                dst.write(data)
                await dst.drain()

    async def _answers(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, dropping: list[tuple[bytes, ...]]
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                await self._flowing.wait()
                if dropping and data.startswith(b"-NOSCRIPT"):
                    self._drop_markers = dropping.pop()  # nothing ran: wait for the real one
                elif dropping:
                    self.dropped += 1
                    return  # the request took effect; the client never hears so
                dst.write(data)
                await dst.drain()


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy(port).start()
    try:
        yield proxy
    finally:
        await proxy.close()
