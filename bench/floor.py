"""The floor: the least a durable HTTP chat turn can cost in Python on this machine.

    python -m bench.floor LOG_PATH     (prints "floor is up at http://127.0.0.1:PORT/v1")

An aiohttp server answering `POST /v1/chat/completions` in the OpenAI shape. Each
request's message and its reply (an echo with a per-key turn number, so the load
generator's checks read it like chatlane's) are appended to ONE log file, and the
answer is sent only after an fdatasync that covers it. Syncs are group commits: while
one runs, the lines of later requests gather and share the next one; nothing waits for
a timer. No sessions, no locks, no queue modes: whatever chatlane costs above this is
its own work, so `bench pipeline` reports chatlane / floor, measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from aiohttp import web


class GroupLog:
    """An append-only log whose writers wait for a shared fdatasync."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._pending: list[asyncio.Future[None]] = []
        self._syncing = False

    async def append(self, line: bytes) -> None:
        os.write(self._fd, line)  # page cache: cheap enough for the loop
        done = asyncio.get_running_loop().create_future()
        self._pending.append(done)
        if not self._syncing:
            self._syncing = True
            asyncio.get_running_loop().create_task(self._sync())
        await done

    async def _sync(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await asyncio.to_thread(os.fdatasync, self._fd)
                for f in batch:
                    f.set_result(None)
        finally:
            self._syncing = False


async def serve(log_path: str) -> None:
    log = GroupLog(log_path)
    turns: dict[str, int] = {}

    async def completions(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        key = request.headers.get("X-Session-Key", "anon")
        text = str(body["messages"][-1]["content"])
        turn = turns.get(key, 0) + 1
        turns[key] = turn
        answer = f"echo: {text}\n(turn {turn} of session 00000000; new session)"
        record = {"key": key, "at": time.time(), "user": text, "assistant": answer}
        await log.append(json.dumps(record).encode() + b"\n")
        reply = {
            "id": f"floor-{turn}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "floor"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            ],
        }
        return web.json_response(reply)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"floor is up at http://127.0.0.1:{port}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sys.argv[1]))
