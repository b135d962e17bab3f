"""Fixtures for the Discord adapter: real discord.py against the local fake Discord.

fake        a running FakeDiscord (bots/testing/fake_discord.py)
start_bot   `await start_bot(discord_toml, ...)`: chatlane's DiscordService on it
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bots.discord.service import DiscordService, create
from bots.launcher import load_config
from bots.runtime import Runtime
from bots.testing.fake_discord import FakeDiscord
from core.agents.base import Agent

TOKEN_ENV = "CHATLANE_TEST_DISCORD_TOKEN"


@dataclass
class Bot:
    service: DiscordService
    runtime: Runtime
    fake: FakeDiscord

    async def sessions(self) -> list[str]:
        return sorted(e.key for e in (await self.runtime.store.list()).entries)


StartBot = Callable[..., Awaitable[Bot]]


def build_runtime(path: Path, token: str | None, agent: Agent | None) -> Runtime:
    loaded = load_config(path, env={TOKEN_ENV: token} if token else {})
    return Runtime.build(loaded, agent=agent)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    f = await FakeDiscord().start()
    yield f
    await f.close()


@pytest.fixture
async def start_bot(fake: FakeDiscord, tmp_path: Path) -> AsyncIterator[StartBot]:
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            discord_toml: str = "",
            *,
            more_toml: str = "",
            agent: Agent | None = None,
            echo_delay_ms: int = 0,
            token: str | None = fake.token,
            enabled: bool = True,
        ) -> Bot:
            path = tmp_path / "chatlane.toml"
            # the fake serves attachments itself (unless the test sets the hosts)
            hosts = "" if "attachment_hosts" in discord_toml else 'attachment_hosts = ["127.0.0.1"]'
            path.write_text(
                f"[agent]\necho_delay_ms = {echo_delay_ms}\n"
                '[store]\npath = "state"\n'
                "[http]\nenabled = false\n"
                f"[discord]\nenabled = {str(enabled).lower()}\n"
                f'token_env = "{TOKEN_ENV}"\n'
                f'api_base_url = "{fake.api_base}"\n'
                f'gateway_url = "{fake.gateway_url}"\n'
                f"{hosts}\n"
                "guild_ready_timeout_s = 0.05\n"
                "ready_timeout_s = 10\n"
                f"{discord_toml}\n{more_toml}\n",
                encoding="utf-8",
            )
            runtime = build_runtime(path, token, agent)
            stack.push_async_callback(runtime.close)
            service = create(runtime)
            await service.start()

            async def stop() -> None:
                await runtime.gateway.close(timeout=5)
                await service.stop()

            stack.push_async_callback(stop)
            return Bot(service, runtime, fake)

        yield start
