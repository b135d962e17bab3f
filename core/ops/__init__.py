"""Keeping it running: logs, metrics and owned tasks."""

from __future__ import annotations

from core.ops.logs import announce, key_hash, setup_logging
from core.ops.metrics import Metrics
from core.ops.tasks import TaskSet

__all__ = [
    "Metrics",
    "TaskSet",
    "announce",
    "key_hash",
    "setup_logging",
]
