"""Shared by the console tests: a store filled directly, a logged-in aiohttp client."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from core.conversation import Reserver
from core.model import SessionKey
from core.store.files.store import FileStore

TOKEN = "console-test-token"
ENV = {"CHATLANE_HTTP_TOKEN": TOKEN, "DISCORD_BOT_TOKEN": "fake-token"}
EVIL_USER = "<img src=x onerror=alert(1)>"
EVIL_KEY = f"agent:main:discord:{EVIL_USER}:chan"
"""Not a key chatlane makes (the grammar forbids <>): written straight into the store,
as a damaged or hostile store could hold it."""
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


async def fill_store(state: Path, n: int, extra: tuple[str, ...] = ()) -> None:
    """`n` sessions (keys `agent:main:http:user-<i>:api`) plus `extra`, written directly."""
    store = FileStore(state)
    try:
        reserver = Reserver(store)
        for i in range(n):
            await store.reserve(
                SessionKey(f"agent:main:http:user-{i:05d}:api"), lambda _: True, reserver.mint
            )
        for key in extra:
            await store.reserve(SessionKey(key), lambda _: True, reserver.mint)
    finally:
        await store.close()


async def login(http: aiohttp.ClientSession, root: str, operator: str = "tester") -> None:
    async with http.post(
        f"{root}/console/login", data={"token": TOKEN, "operator": operator}, allow_redirects=False
    ) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/console"
