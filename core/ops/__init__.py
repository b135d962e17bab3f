"""Keeping it running: logs, metrics, owned tasks and the scheduler of `[[schedules]]`."""

from __future__ import annotations

from core.ops.logs import announce, key_hash, setup_logging
from core.ops.metrics import Metrics
from core.ops.schedules import Fire, FireLedger, Scheduler, next_slot, slots_between
from core.ops.tasks import TaskSet, cancel_and_wait, forget_cancels

__all__ = [
    "Fire",
    "FireLedger",
    "Metrics",
    "Scheduler",
    "TaskSet",
    "announce",
    "cancel_and_wait",
    "forget_cancels",
    "key_hash",
    "next_slot",
    "setup_logging",
    "slots_between",
]
