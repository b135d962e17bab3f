"""The floor for waiting: a bare aiohttp handler that parses the body and sleeps.

    python -m bench.sleeper DELAY_S     (prints "sleeper is up at http://127.0.0.1:PORT/v1")

`POST /v1/chat/completions` reads the JSON body, sleeps DELAY_S (a model that takes
that long) and answers in the OpenAI shape with an echo-like text, so the load
generator's checks read it like chatlane's. No sessions, no store, no queue: whatever
chatlane's p99 beyond the model's time costs above this handler's, under the same
client in the same run, is chatlane's own work (`bench waiting`). It listens with the
same backlog as chatlane's HTTP API, so both meet the same kernel accept queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from typing import Any

from aiohttp import web

from bots.http.guard import BACKLOG


async def serve(delay_s: float) -> None:
    async def completions(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        text = str(body["messages"][-1]["content"])
        await asyncio.sleep(delay_s)
        answer = f"echo: {text}\n(turn 1 of session 00000000; new session)"
        return web.json_response(
            {
                "id": "sleeper",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "sleeper"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                ],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock, backlog=BACKLOG)
    await site.start()
    print(f"sleeper is up at http://127.0.0.1:{sock.getsockname()[1]}/v1", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(float(sys.argv[1])))
