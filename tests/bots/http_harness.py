"""A real chatlane HTTP API on 127.0.0.1 (OS-assigned port) over a temporary store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from openai import AsyncOpenAI

from bots.http.service import HttpService
from bots.launcher import load_config
from bots.runtime import Runtime
from core.types import ChatMessage, SessionEntry, SessionKey


@dataclass(slots=True)
class Served:
    runtime: Runtime
    service: HttpService

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.service.port}{path}"

    def client(self, api_key: str = "unused", max_retries: int = 0) -> AsyncOpenAI:
        """The official client, as a user would point it at us."""
        return AsyncOpenAI(
            base_url=self.service.base_url, api_key=api_key, max_retries=max_retries, timeout=10
        )

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
    agent: str = "",
    http: str = "",
    extra: str = "",
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Served]:
    """Start the API with `[agent]`/`[http]` lines added to a minimal config; stop it after."""
    path = tmp_path / "chatlane.toml"
    path.write_text(
        f'[agent]\n{agent}\n[http]\nport = 0\n{http}\n[store]\npath = "{tmp_path / "state"}"\n{extra}\n',
        encoding="utf-8",
    )
    runtime = Runtime.build(load_config(path, env=dict(env or {})))
    service = HttpService(runtime)
    try:
        await service.start()
        yield Served(runtime, service)
    finally:
        await runtime.gateway.close()
        await service.stop()
        await runtime.close()


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `check` (sync or async) until it returns truthy; fail after `timeout` s."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)
