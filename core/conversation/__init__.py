"""One session per conversation and one order per conversation: the reserver maps a key
to a session (check, mint and persist under a lock), lanes run a key's turns one at a
time in arrival order (queue modes), routing picks the agent (`[[bindings]]`).
"""

from __future__ import annotations

from core.conversation.lanes import Lanes, Pending, Retry
from core.conversation.reserver import Freshness, Reserver
from core.conversation.routing import Router

__all__ = [
    "Freshness",
    "Lanes",
    "Pending",
    "Reserver",
    "Retry",
    "Router",
]
