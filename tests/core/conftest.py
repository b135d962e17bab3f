"""Fixtures shared by the core tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bots.testing import RecordingAgent
from core.agents.base import Agent
from core.config import Config
from core.door.gateway import Gateway
from core.store.files.store import FileStore

Gateways = Callable[..., Gateway]
"""`gateways(config, agent=None, store=None)`: a gateway on the test's file store."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    """A fresh embedded store in the test's own folder, closed afterwards."""
    store = FileStore(tmp_path / "state")
    yield store
    await store.close()


@pytest.fixture
async def gateways(tmp_path: Path) -> AsyncIterator[Gateways]:
    """Gateways on one file store folder (several stand for several processes); each is
    closed, with its store, after the test."""
    made: list[Gateway] = []

    def make(config: Config, agent: Agent | None = None, store: FileStore | None = None) -> Gateway:
        gw = Gateway(config, store or FileStore(tmp_path / "state"), agent or RecordingAgent())
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.close(timeout=5)
        await gw.store.close()
