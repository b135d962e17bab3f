"""Fixtures shared by the core tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.store.files import FileStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    """A fresh embedded store in the test's own folder, closed afterwards."""
    store = FileStore(tmp_path / "state")
    yield store
    await store.close()
