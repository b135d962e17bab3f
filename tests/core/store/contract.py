"""What the per-part contract tests share: keys, minters, freshness checks, `OpenStore`.

The contract is in parts (core/store/base.py): test_sessions, test_ledger,
test_deliveries, test_limits, test_signals and test_blobs each prove one part, and each
runs once per backend (the `open_store` fixture below, which conftest.py offers to
every test here). A new backend is added
there and can be built and proved one part at a time (`-k files`, `-k redis`, or
`tests/core/store/test_sessions.py` alone). "Several stores" stand for several
processes: two `FileStore`s on one folder, or two `RedisStore`s (two connection pools)
on one Redis prefix; they share nothing but the backing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bots.testing import RedisServer, unique_prefix
from core.config import StoreSettings
from core.conversation.reserver import new_session_id
from core.model.keys import SessionKey
from core.model.sessions import SessionEntry
from core.store.base import SessionStore
from core.store.files.store import FileStore
from core.store.redis.store import RedisStore

KEY = SessionKey("agent:main:test:alice:general")
OTHER = SessionKey("agent:main:test:bob:general")

BACKENDS = ["files", "redis"]

CONTRACT_LOCK_TTL_S = 20.0
"""The Redis turn lock's TTL in contract tests: a lock left held shows as a wait of this
long, far beyond `RELEASED_WITHIN_S`, so a lock that is not given back fails the test."""

RELEASED_WITHIN_S = 10.0
"""How soon a freed turn lock must be taken again (well under `CONTRACT_LOCK_TTL_S`)."""

OpenStore = Callable[[], Awaitable[SessionStore]]
"""Opens one more store on the test's backing; every store opened is closed after the test."""


def mint_at(at: float) -> Callable[[SessionKey], SessionEntry]:
    def mint(key: SessionKey) -> SessionEntry:
        return SessionEntry(key, new_session_id(), key.split(":")[2], at, at, at, at)

    return mint


def always(_: SessionEntry) -> bool:
    return True


def never(_: SessionEntry) -> bool:
    return False


@pytest.fixture(params=BACKENDS)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores that share one backing (folder or Redis prefix); closes them after."""
    opened: list[SessionStore] = []
    if request.param == "files":

        async def open_one() -> SessionStore:
            store = FileStore(tmp_path / "state")
            opened.append(store)
            return store

    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = StoreSettings(
            backend="redis", url=server.url, prefix=unique_prefix(), turn_lock_ttl_s=CONTRACT_LOCK_TTL_S
        )

        async def open_one() -> SessionStore:
            store = RedisStore.from_settings(settings, None)
            opened.append(store)
            return store

    yield open_one
    for store in opened:
        await store.close()
