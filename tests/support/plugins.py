"""A real installed distribution registering the `testplug` agents entry point."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.plugin_agents import write_distribution


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The distribution on sys.path (an entry point found by importlib.metadata, not a patch)."""
    site = write_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("chatlane_testplug", None)
