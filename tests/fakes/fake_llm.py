"""A local fake OpenAI-compatible chat-completions server, for tests and benchmarks.

    async with FakeLLM(delay_s=0.2) as llm:
        client = AsyncOpenAI(base_url=llm.base_url, api_key="k")
        ...
        llm.calls[0].messages   # exactly what the model was shown

It answers `POST /v1/chat/completions` as JSON or, with `stream: true`, as SSE chunks
ending in `data: [DONE]`; `GET /v1/models` lists `model`. Every request is recorded
(`calls`, in arrival order) before any delay or failure, so a test can prove what
history each call carried. Failure modes: `fail_status` answers with that status and an
OpenAI-style error object when a request is one of the first `fail_first`, every
`fail_every`-th, or drawn with probability `fail_fraction` (seeded, reproducible).
Usage is reported (`usage_of`: prompt tokens = words of the messages, completion tokens =
words of the answer) in JSON answers, and in a last chunk of a stream when the request
asks with `stream_options.include_usage`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from bots.testing.server import serve_on_loopback

Reply = Callable[[Sequence[dict[str, Any]]], str]


def reply_to_last(messages: Sequence[dict[str, Any]]) -> str:
    """The default answer: names the last user message, so transcripts are easy to check."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    return f"reply to: {last.get('content') if last else ''}"


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded request."""

    messages: list[dict[str, Any]]
    body: dict[str, Any]
    authorization: str
    at: float
    failed: bool


@dataclass(slots=True)
class FakeLLM:
    delay_s: float = 0.0
    """Wait this long before answering (before the first byte)."""
    reply: Reply = reply_to_last
    model: str = "fake-model"
    fail_status: int = 500
    fail_first: int = 0
    fail_every: int = 0
    fail_fraction: float = 0.0
    seed: int = 0
    plain_json: bool = False
    """Answer every request as one JSON completion, `stream: true` or not (a server that
    does not stream)."""
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _rng: random.Random = field(default_factory=random.Random)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._rng.seed(self.seed)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        self._runner, self.port = await serve_on_loopback(
            app, shutdown_timeout=0.1, handler_cancellation=True
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _should_fail(self, n: int) -> bool:
        if n <= self.fail_first:
            return True
        if self.fail_every and n % self.fail_every == 0:
            return True
        return bool(self.fail_fraction) and self._rng.random() < self.fail_fraction

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        failed = self._should_fail(len(self.calls) + 1)
        messages = list(body.get("messages", []))
        self.calls.append(Call(messages, body, request.headers.get("Authorization", ""), time.time(), failed))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if failed:
            error = {"message": f"fake failure ({self.fail_status})", "type": "server_error", "code": None}
            # Let the client's own retries (if any) come back at once.
            headers = {"retry-after-ms": "1"}
            return web.json_response({"error": error}, status=self.fail_status, headers=headers)
        text = self.reply(messages)
        ident = f"chatcmpl-fake{len(self.calls)}"
        usage = usage_of(messages, text)
        if not body.get("stream") or self.plain_json:
            return web.json_response(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        pieces = [{"role": "assistant", "content": ""}] + [{"content": p} for p in _pieces(text)]
        for delta in pieces:
            await resp.write(_chunk(ident, self.model, delta, None))
        await resp.write(_chunk(ident, self.model, {}, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            last = json.loads(_chunk(ident, self.model, {}, None)[len(b"data: ") :])
            last.update(choices=[], usage=usage)
            await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def usage_of(messages: Sequence[dict[str, Any]], text: str) -> dict[str, int]:
    """The fake's token count: words of the messages' text, words of the answer."""
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _pieces(text: str) -> list[str]:
    """Word-sized pieces that join back to `text`."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def _chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"
