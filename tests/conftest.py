"""Fixtures every test may use, from `tests/support/` (shipped helpers: `bots.testing`)."""

from __future__ import annotations

pytest_plugins = [
    "tests.support.discord",
    "tests.support.llm",
    "tests.support.plugins",
    "tests.support.redis",
]
