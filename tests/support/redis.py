"""pytest fixtures for a real `redis-server` (see `bots.testing.redis`).

  redis_server          one server for the whole test session; isolate with `unique_prefix()`
  private_redis_server  a server of the test's own, free to stop and restart

Without `redis-server` on PATH a test that needs one is skipped, except in CI
(`CI=true`), where that is a failure: a green CI must mean the Redis tests ran
(tests/support/skips.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bots.testing.redis import NOT_INSTALLED, RedisServer, find_redis_server
from tests.support.skips import cannot_run_here


def require_redis_server() -> str:
    """The path of `redis-server`; skips the test without it (fails it in CI)."""
    path = find_redis_server()
    if path is None:
        cannot_run_here(NOT_INSTALLED)
    return path


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server shared by the session; give each test its own `unique_prefix()`."""
    with RedisServer.start(require_redis_server()) as server:
        yield server


@pytest.fixture
def private_redis_server() -> Iterator[RedisServer]:
    """A server of this test's own, which the test may stop and restart."""
    with RedisServer.start(require_redis_server()) as server:
        yield server
