"""Offers `open_store` (the store contract's backends, contract.py) to every store test."""

from __future__ import annotations

from tests.core.store.contract import open_store

__all__ = ["open_store"]
