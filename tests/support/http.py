"""The real chatlane HTTP API in the test's own process, over a temporary store."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from openai import AsyncOpenAI

from bots.http.service import HttpService
from bots.launcher import load_config
from bots.runtime import Runtime
from bots.testing import write_config
from core.agents.base import Agent
from core.model.keys import SessionKey
from core.model.messages import ChatMessage
from core.model.sessions import SessionEntry

COMPLETIONS = "/v1/chat/completions"


def body(text: str, user: str | None = None, **more: Any) -> dict[str, Any]:
    """A chat-completions request body with one user message."""
    out: dict[str, Any] = {"model": "main", "messages": [{"role": "user", "content": text}], **more}
    if user is not None:
        out["user"] = user
    return out


@dataclass(slots=True)
class Api:
    """A running HttpService, an aiohttp session for raw requests and the official client."""

    runtime: Runtime
    service: HttpService
    http: aiohttp.ClientSession
    statuses: dict[int, int] = field(default_factory=dict)
    """How many responses `post` saw of each HTTP status."""

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.service.port}{path}"

    def client(self, api_key: str = "unused", max_retries: int = 0) -> AsyncOpenAI:
        """The official client, as a user would point it at us."""
        return AsyncOpenAI(
            base_url=self.service.base_url, api_key=api_key, max_retries=max_retries, timeout=10
        )

    async def post(
        self, payload: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """POST a body (JSON-encoded unless bytes); the status, parsed JSON and headers."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        # aiohttp warns that a large bytes body blocks the loop; a file object streams.
        sent: bytes | io.BytesIO = io.BytesIO(data) if len(data) > 64 * 1024 else data
        async with self.http.post(self.url(COMPLETIONS), data=sent, headers=hdrs) as resp:
            raw = await resp.read()
            self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
            if resp.content_type == "text/event-stream":  # `"stream": true` was asked for
                return resp.status, {"stream": raw.decode()}, resp.headers
            return resp.status, json.loads(raw) if raw else {}, resp.headers

    async def entries(self) -> list[SessionEntry]:
        return (await self.runtime.store.list()).entries

    async def transcript(self, key: str) -> list[ChatMessage]:
        entry = await self.runtime.store.get(SessionKey(key))
        assert entry is not None, f"no session for {key}"
        return await self.runtime.store.tail(entry.session_id, 1000)


@contextlib.asynccontextmanager
async def serve(
    tmp_path: Path,
    *,
    agent: Agent | None = None,
    agent_toml: str = "",
    http: str = "",
    extra: str = "",
    env: Mapping[str, str] | None = None,
    state: Path | None = None,
) -> AsyncIterator[Api]:
    """Start the API on a free port over a store in `tmp_path` (or `state`); stop it after.

    `agent` replaces the configured agent; `agent_toml` and `http` are lines for the
    `[agent]` and `[http]` sections; `extra` is more TOML (whole sections) at the end.
    """
    config = write_config(tmp_path, f"{http}\n[agent]\n{agent_toml}\n{extra}", state=state)
    runtime = Runtime.build(load_config(config, env=dict(env or {})), agent=agent)
    service = HttpService(runtime)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=200)) as session:
        try:
            await service.start()
            yield Api(runtime, service, session)
        finally:
            await runtime.gateway.close()
            await service.stop()
            await runtime.close()
