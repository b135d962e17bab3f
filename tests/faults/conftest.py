"""Fixtures of the fault suite: a shared real `redis-server` (see tests/redis_server.py)."""

from __future__ import annotations

from tests.redis_server import private_redis_server, redis_server

__all__ = ["private_redis_server", "redis_server"]
