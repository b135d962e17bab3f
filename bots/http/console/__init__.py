"""The operator console: a web page on the HTTP service (docs/console.md)."""

from __future__ import annotations

from bots.http.console.app import Console

__all__ = ["Console"]
